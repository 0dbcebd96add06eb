//! A client for a whole cluster: bootstrap, metadata, routing to partition leaders, and the
//! admin, produce and fetch calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use crate::connection::Connection;
use crate::{ClientError, Result};

/// A partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub error_code: i16,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Record batches; the last one may be partial.
    pub records: Bytes,
    pub high_watermark: i64,
    /// The last stable offset (the high watermark where the broker does not report it).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions in the fetched range (read_committed only): (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn check(code: i16, message: Option<&StrBytes>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::kafka(code, message.map(|m| m.as_str())))
    }
}

/// A client of one cluster.
pub struct Client {
    client_id: String,
    bootstrap: Arc<Connection>,
    /// Broker id -> address, from the last Metadata.
    brokers: Mutex<HashMap<i32, String>>,
    controller: Mutex<Option<i32>>,
    connections: Mutex<HashMap<i32, Arc<Connection>>>,
    /// (topic, partition) -> leader, from the last Metadata.
    leaders: Mutex<HashMap<(String, i32), i32>>,
}

impl Client {
    /// Connects to a bootstrap broker (`host:port`).
    pub async fn connect(bootstrap: &str) -> Result<Client> {
        Self::connect_as(bootstrap, "freshet-cli").await
    }

    pub async fn connect_as(bootstrap: &str, client_id: &str) -> Result<Client> {
        let conn = Arc::new(Connection::connect(bootstrap, client_id).await?);
        let client = Client {
            client_id: client_id.to_string(),
            bootstrap: conn,
            brokers: Mutex::default(),
            controller: Mutex::default(),
            connections: Mutex::default(),
            leaders: Mutex::default(),
        };
        client.metadata(Some(&[]), false).await?;
        Ok(client)
    }

    /// Whether a connection this client holds is known to be broken (see
    /// [`Connection::is_closed`]); a long-lived user connects again.
    pub async fn is_broken(&self) -> bool {
        self.bootstrap.is_closed() || self.connections.lock().await.values().any(|c| c.is_closed())
    }

    /// The bootstrap connection (for raw protocol work).
    pub fn bootstrap(&self) -> &Arc<Connection> {
        &self.bootstrap
    }

    /// Metadata for `topics` (None: all), optionally creating missing ones.
    pub async fn metadata(&self, topics: Option<&[&str]>, auto_create: bool) -> Result<Vec<TopicInfo>> {
        let req = MetadataRequest::default()
            .with_topics(
                topics.map(|ts| ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(name(t)))).collect()),
            )
            .with_allow_auto_topic_creation(auto_create);
        let resp = self.bootstrap.send(&req, 12).await?;
        {
            let mut brokers = self.brokers.lock().await;
            for b in &resp.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
            }
        }
        *self.controller.lock().await = Some(resp.controller_id.0);
        let mut leaders = self.leaders.lock().await;
        let topics = resp
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                let partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
                        PartitionInfo { index: p.partition_index, leader: p.leader_id.0, error_code: p.error_code }
                    })
                    .collect();
                TopicInfo { name, id: t.topic_id.to_string(), error_code: t.error_code, partitions }
            })
            .collect();
        Ok(topics)
    }

    /// One topic's metadata; an error if it does not exist.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let mut infos = self.metadata(Some(&[topic]), false).await?;
        let info = infos.pop().ok_or_else(|| ClientError::Protocol("empty metadata response".into()))?;
        check(info.error_code, None)?;
        Ok(info)
    }

    async fn connection_to(&self, node: i32) -> Result<Arc<Connection>> {
        if let Some(c) = self.connections.lock().await.get(&node) {
            return Ok(c.clone());
        }
        let addr = self
            .brokers
            .lock()
            .await
            .get(&node)
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("broker {node} is not in the metadata")))?;
        // A single-node cluster's advertised address is usually the bootstrap one.
        let conn = if addr == self.bootstrap.addr() {
            self.bootstrap.clone()
        } else {
            Arc::new(Connection::connect(&addr, &self.client_id).await?)
        };
        self.connections.lock().await.insert(node, conn.clone());
        Ok(conn)
    }

    /// The connection to a partition's leader.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Connection>> {
        let key = (topic.to_string(), partition);
        let known = self.leaders.lock().await.get(&key).copied();
        let leader = match known {
            Some(l) if l >= 0 => l,
            _ => {
                self.metadata(Some(&[topic]), false).await?;
                self.leaders.lock().await.get(&key).copied().filter(|l| *l >= 0).ok_or_else(|| ClientError::Kafka {
                    code: kafka_protocol::ResponseError::UnknownTopicOrPartition,
                    message: format!("no leader for {topic}-{partition}"),
                })?
            }
        };
        self.connection_to(leader).await
    }

    async fn controller(&self) -> Result<Arc<Connection>> {
        match *self.controller.lock().await {
            Some(id) if id >= 0 => self.connection_to(id).await,
            _ => Ok(self.bootstrap.clone()),
        }
    }

    /// Creates a topic.
    pub async fn create_topic(&self, topic: &str, partitions: i32, configs: &[(String, String)]) -> Result<()> {
        let t = CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(30_000);
        let resp = self.controller().await?.send(&req, 7).await?;
        let r = resp.topics.first().ok_or_else(|| ClientError::Protocol("empty CreateTopics response".into()))?;
        check(r.error_code, r.error_message.as_ref())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let conn = self.controller().await?;
        let version = conn.version::<DeleteTopicsRequest>(6)?;
        let req = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default().with_name(Some(name(topic)))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(topic)])
        }
        .with_timeout_ms(30_000);
        let resp = conn.send_versioned(&req, version).await?;
        let r = resp.responses.first().ok_or_else(|| ClientError::Protocol("empty DeleteTopics response".into()))?;
        check(r.error_code, r.error_message.as_ref())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count)
                .with_assignments(None)])
            .with_timeout_ms(30_000);
        let resp = self.controller().await?.send(&req, 3).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Protocol("empty CreatePartitions response".into()))?;
        check(r.error_code, r.error_message.as_ref())
    }

    /// A topic's configs: (name, value, source code), all of them.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<Vec<(String, String, i8)>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
        let resp = self.bootstrap.send(&req, 4).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Protocol("empty DescribeConfigs response".into()))?;
        check(r.error_code, r.error_message.as_ref())?;
        Ok(r.configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), c.config_source))
            .collect())
    }

    /// Sets (Some) or deletes (None) topic configs.
    pub async fn alter_topic_configs(&self, topic: &str, changes: &[(String, Option<String>)]) -> Result<()> {
        let configs = changes
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(if v.is_some() { 0 } else { 1 })
                    .with_value(v.clone().map(StrBytes::from_string))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(configs)]);
        let resp = self.controller().await?.send(&req, 1).await?;
        let r = resp
            .responses
            .first()
            .ok_or_else(|| ClientError::Protocol("empty IncrementalAlterConfigs response".into()))?;
        check(r.error_code, r.error_message.as_ref())
    }

    /// ListOffsets for one partition: -1 latest, -2 earliest, or a timestamp. Returns the offset
    /// (-1 when no record is at or after the timestamp).
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        self.list_offset_isolated(topic, partition, timestamp, 0).await
    }

    /// ListOffsets with an isolation level: with 1 (read_committed), "latest" is the last stable
    /// offset rather than the high watermark.
    pub async fn list_offset_isolated(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation_level: i8,
    ) -> Result<i64> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![ListOffsetsTopic::default().with_name(name(topic)).with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)
                    .with_current_leader_epoch(-1),
            ])]);
        let resp = self.leader(topic, partition).await?.send(&req, 7).await?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty ListOffsets response".into()))?;
        check(p.error_code, None)?;
        Ok(p.offset)
    }

    /// Deletes records of a partition below `offset`; returns the new low watermark.
    pub async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64> {
        let req = DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default().with_name(name(topic)).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(partition).with_offset(offset),
            ])])
            .with_timeout_ms(30_000);
        let resp = self.leader(topic, partition).await?.send(&req, 2).await?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty DeleteRecords response".into()))?;
        check(p.error_code, None)?;
        Ok(p.low_watermark)
    }

    /// The coordinator of a group (FindCoordinator), as a connection.
    async fn coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        self.coordinator_of(group, 0).await
    }

    /// The coordinator of a group (`key_type` 0) or of a transactional id (1).
    async fn coordinator_of(&self, key: &str, key_type: i8) -> Result<Arc<Connection>> {
        let conn = self.bootstrap.clone();
        let version = conn.version::<FindCoordinatorRequest>(4)?;
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_string(key.to_string())])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(key.to_string()))
        }
        .with_key_type(key_type);
        let resp = conn.send_versioned(&req, version).await?;
        let (code, node, host, port) = match resp.coordinators.first() {
            Some(c) => (c.error_code, c.node_id.0, c.host.to_string(), c.port),
            None => (resp.error_code, resp.node_id.0, resp.host.to_string(), resp.port),
        };
        check(code, None)?;
        self.brokers.lock().await.entry(node).or_insert_with(|| format!("{host}:{port}"));
        self.connection_to(node).await
    }

    /// Groups: (id, protocol type, state).
    pub async fn list_groups(&self) -> Result<Vec<(String, String, String)>> {
        let resp = self.bootstrap.send(&ListGroupsRequest::default(), 4).await?;
        check(resp.error_code, None)?;
        Ok(resp
            .groups
            .iter()
            .map(|g| (g.group_id.to_string(), g.protocol_type.to_string(), g.group_state.to_string()))
            .collect())
    }

    /// DescribeGroups for one group.
    pub async fn describe_group(&self, group: &str) -> Result<describe_groups_response::DescribedGroup> {
        let conn = self.coordinator(group).await?;
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = conn.send(&req, 5).await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeGroups response".into()))?;
        check(g.error_code, g.error_message.as_ref())?;
        Ok(g)
    }

    /// ConsumerGroupDescribe (KIP-848 groups), if the broker serves it.
    pub async fn describe_consumer_group(
        &self,
        group: &str,
    ) -> Result<consumer_group_describe_response::DescribedGroup> {
        let conn = self.coordinator(group).await?;
        let req = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = conn.send(&req, 1).await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty ConsumerGroupDescribe response".into()))?;
        check(g.error_code, g.error_message.as_ref())?;
        Ok(g)
    }

    /// A group's committed offsets: (topic, partition) -> offset.
    pub async fn committed_offsets(&self, group: &str) -> Result<std::collections::BTreeMap<(String, i32), i64>> {
        let conn = self.coordinator(group).await?;
        let version = conn.version::<OffsetFetchRequest>(7)?;
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(None);
        let resp = conn.send_versioned(&req, version).await?;
        check(resp.error_code, None)?;
        let mut out = std::collections::BTreeMap::new();
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, None)?;
                if p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for a group from outside it (the group must have no members).
    pub async fn commit_offsets(&self, group: &str, offsets: &[((String, i32), i64)]) -> Result<()> {
        self.commit_offsets_as(group, "", -1, offsets).await
    }

    /// One ConsumerGroupHeartbeat (KIP-848) for `group`: joins when `member_epoch` is 0 (with
    /// `subscribed`), leaves when it is -1, else heartbeats reporting the partitions the member
    /// still owns (`owned`: topic id, partitions). Returns (member id, member epoch, assigned
    /// (topic id, partitions) if the answer carries an assignment, heartbeat interval in ms).
    /// `instance_id` makes the member static: joining again with it takes its old place at once
    /// (KIP-345), as a restarted process does before its old session times out.
    #[allow(clippy::too_many_arguments)]
    pub async fn consumer_group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        instance_id: Option<&str>,
        subscribed: Option<&[String]>,
        owned: Option<&[(String, Vec<i32>)]>,
    ) -> Result<(String, i32, Option<Vec<(String, Vec<i32>)>>, i32)> {
        use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
        let conn = self.coordinator(group).await?;
        let version = conn.version::<ConsumerGroupHeartbeatRequest>(0)?;
        let owned = match owned {
            Some(o) => {
                let mut tps = vec![];
                for (id, ps) in o {
                    let id = id.parse().map_err(|_| ClientError::Protocol(format!("bad topic id {id}")))?;
                    tps.push(TopicPartitions::default().with_topic_id(id).with_partitions(ps.clone()));
                }
                Some(tps)
            }
            None => None,
        };
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_member_epoch(member_epoch)
            .with_instance_id(instance_id.map(|i| StrBytes::from_string(i.to_string())))
            .with_rebalance_timeout_ms(if member_epoch == 0 { 60_000 } else { -1 })
            .with_subscribed_topic_names(subscribed.map(|ts| ts.iter().map(|t| name(t)).collect()))
            .with_topic_partitions(owned);
        let resp = conn.send_versioned(&req, version).await?;
        check(resp.error_code, resp.error_message.as_ref())?;
        let assigned = resp
            .assignment
            .map(|a| a.topic_partitions.into_iter().map(|tp| (tp.topic_id.to_string(), tp.partitions)).collect());
        let id = resp.member_id.map(|m| m.to_string()).unwrap_or_else(|| member_id.to_string());
        Ok((id, resp.member_epoch, assigned, resp.heartbeat_interval_ms))
    }

    /// Commits offsets as a member of the group (its id, and its generation or, in a
    /// consumer-protocol group, its member epoch), or from outside it (`""`, -1).
    pub async fn commit_offsets_as(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[((String, i32), i64)],
    ) -> Result<()> {
        use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
        let conn = self.coordinator(group).await?;
        let mut by_topic: std::collections::BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = Default::default();
        for ((t, p), o) in offsets {
            by_topic
                .entry(t)
                .or_default()
                .push(OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*o));
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_generation_id_or_member_epoch(member_epoch)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(name(t)).with_partitions(ps))
                    .collect(),
            );
        let version = conn.version::<OffsetCommitRequest>(9)?;
        let resp = conn.send_versioned(&req, version).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, None)?;
            }
        }
        Ok(())
    }

    /// Deletes a group (it must have no members) and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let conn = self.coordinator(group).await?;
        let req =
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = conn.send(&req, 2).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Protocol("empty DeleteGroups response".into()))?;
        check(r.error_code, None)
    }

    /// InitProducerId for a transactional id: its producer id and (new) epoch. The coordinator
    /// completes a transaction of the id that was being committed and aborts one left open
    /// (answering CONCURRENT_TRANSACTIONS until it is done), and fences the id's older epochs.
    pub async fn init_transactions(&self, transactional_id: &str, timeout_ms: i32) -> Result<(i64, i16)> {
        let conn = self.coordinator_of(transactional_id, 1).await?;
        let version = conn.version::<InitProducerIdRequest>(4)?;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(transactional_id.to_string()))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp = conn.send_versioned(&req, version).await?;
        check(resp.error_code, None)?;
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    /// AddPartitionsToTxn (v3, the client's): adds partitions to the producer's transaction.
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
    ) -> Result<()> {
        use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
        let conn = self.coordinator_of(transactional_id, 1).await?;
        let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for (t, p) in partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let topics = by_topic
            .into_iter()
            .map(|(t, ps)| AddPartitionsToTxnTopic::default().with_name(name(t)).with_partitions(ps));
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
            .with_v3_and_below_producer_id(ProducerId(producer.0))
            .with_v3_and_below_producer_epoch(producer.1)
            .with_v3_and_below_topics(topics.collect());
        let resp = conn.send(&req, 3).await?;
        for t in &resp.results_by_topic_v3_and_below {
            for p in &t.results_by_partition {
                check(p.partition_error_code, None)?;
            }
        }
        Ok(())
    }

    /// EndTxn: commits (or aborts) the producer's transaction.
    pub async fn end_txn(&self, transactional_id: &str, producer: (i64, i16), commit: bool) -> Result<()> {
        let conn = self.coordinator_of(transactional_id, 1).await?;
        let version = conn.version::<EndTxnRequest>(3)?;
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_committed(commit);
        let resp = conn.send_versioned(&req, version).await?;
        check(resp.error_code, None)
    }

    /// Produces one batch of a transaction (encoded with the producer's id, epoch and
    /// sequence: [`crate::records::encode_transactional`]); returns its base offset.
    pub async fn produce_transactional(
        &self,
        transactional_id: &str,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<i64> {
        let req = Self::produce_request(topic, partition, batch, -1, Duration::from_secs(30))
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(transactional_id.to_string()))));
        self.send_produce(topic, partition, &req).await
    }

    /// Sends a Produce request for one partition to its leader; returns the base offset.
    async fn send_produce(&self, topic: &str, partition: i32, req: &ProduceRequest) -> Result<i64> {
        let conn = self.leader(topic, partition).await?;
        let resp = conn.send(req, 9).await?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| ClientError::Protocol("empty Produce response".into()))?;
        check(p.error_code, p.error_message.as_ref())?;
        Ok(p.base_offset)
    }

    /// Builds a Produce request for one partition.
    pub fn produce_request(topic: &str, partition: i32, batch: Bytes, acks: i16, timeout: Duration) -> ProduceRequest {
        ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout.as_millis() as i32).with_topic_data(vec![
            TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(batch)),
            ]),
        ])
    }

    /// Produces one record batch to a partition; returns its base offset (-1 with acks=0).
    pub async fn produce(&self, topic: &str, partition: i32, batch: Bytes, acks: i16) -> Result<i64> {
        let req = Self::produce_request(topic, partition, batch, acks, Duration::from_secs(30));
        if acks == 0 {
            let conn = self.leader(topic, partition).await?;
            conn.send_without_response(&req, 9).await?;
            return Ok(-1);
        }
        self.send_produce(topic, partition, &req).await
    }

    /// Builds a Fetch request for one partition.
    pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait: Duration, max_bytes: i32) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(max_bytes),
            ])])
    }

    /// Fetches from one partition with an isolation level (0 read_uncommitted, 1 read_committed).
    pub async fn fetch_isolated(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait: Duration,
        max_bytes: i32,
        isolation_level: i8,
    ) -> Result<Fetched> {
        let conn = self.leader(topic, partition).await?;
        let req =
            Self::fetch_request(topic, partition, offset, max_wait, max_bytes).with_isolation_level(isolation_level);
        let resp = conn.send(&req, 12).await?;
        check(resp.error_code, None)?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty Fetch response".into()))?;
        check(p.error_code, None)?;
        Ok(Fetched {
            records: p.records.clone().unwrap_or_default(),
            high_watermark: p.high_watermark,
            last_stable_offset: if p.last_stable_offset >= 0 { p.last_stable_offset } else { p.high_watermark },
            log_start_offset: p.log_start_offset,
            aborted: p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect(),
        })
    }

    /// Fetches from one partition: (record batches, high watermark).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait: Duration,
        max_bytes: i32,
    ) -> Result<(Bytes, i64)> {
        let f = self.fetch_isolated(topic, partition, offset, max_wait, max_bytes, 0).await?;
        Ok((f.records, f.high_watermark))
    }
}
