//! [`Topics`] over an external Kafka-protocol cluster (`freshet serve --external-kafka`), through
//! the workspace's own client (`freshet_client`): the SQL engine runs unchanged against any
//! Kafka-protocol cluster, speaking nothing but the Kafka protocol to it.
//!
//! - Appends are `acks=all` Produce requests, one uncompressed v2 batch per call (keys, values,
//!   headers, timestamps; split at `SQL_KAFKA_BATCH_BYTES`), sent to the partition's leader.
//! - Atomic appends (a query's step: outputs, changelog, progress) are Kafka transactions, as a
//!   Java transactional producer makes them: InitProducerId for the owner's transactional id
//!   (once, and again at every `settle_atomic`, which fences an earlier writer of that id),
//!   AddPartitionsToTxn, transactional batches with the producer's id, epoch and sequences,
//!   EndTxn.
//! - Reads are Fetch requests with `isolation_level = read_committed`: up to the last stable
//!   offset, without control records and without records of aborted transactions (the aborted
//!   list of the Fetch response, as a Java consumer uses it), from the partition's leader.
//! - `end_offset` is ListOffsets "latest" with `read_committed`: the last stable offset.
//! - Partition counts come from Metadata (cached for `SQL_KAFKA_METADATA_MAX_AGE_MS`); topics are
//!   created with CreateTopics and waited for until every partition has a leader.
//!
//! Every call blocks, bounded by `SQL_KAFKA_REQUEST_TIMEOUT_MS`; it must run on a thread outside
//! the tokio runtime (the engine's thread), with a handle to the runtime the connections live
//! on. A broken connection, a timeout or a stale leader drops the client: the next call connects
//! again (to each bootstrap address in turn) with fresh metadata. Reads are retried at once; a
//! write only when it cannot have reached the cluster.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_client::kafka_protocol::messages::MetadataRequest;
use freshet_client::kafka_protocol::ResponseError;
use freshet_client::records::{self, Compression, NewRecord};
use freshet_client::{Client, ClientError};
use freshet_common::config::TopicConfig;
use freshet_common::failpoint::failpoint;
use freshet_common::limits::{
    SQL_KAFKA_ATTEMPTS, SQL_KAFKA_BATCH_BYTES, SQL_KAFKA_METADATA_MAX_AGE_MS, SQL_KAFKA_REQUEST_TIMEOUT_MS,
    SQL_KAFKA_RETRY_BACKOFF_MS, SQL_READ_MAX_BYTES, SQL_TXN_TIMEOUT_MS,
};
use freshet_common::topics::TopicError;
use freshet_sql::topics::{Consumed, GroupOffsets, Member, Record, Topics};
use tokio::runtime::Handle;

use super::broker_topics::decode_committed;
use super::SqlTopics;

const READ_COMMITTED: i8 = 1;
const ACKS_ALL: i16 = -1;
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub struct KafkaTopics {
    /// Bootstrap addresses, tried in order when connecting.
    bootstrap: Vec<String>,
    runtime: Handle,
    client: Mutex<Option<Arc<Client>>>,
    /// Partition counts from Metadata, with when they were read.
    partitions: Mutex<HashMap<String, (i32, Instant)>>,
    /// Transactional producers by owner (transactional id): (producer id, epoch) and the next
    /// sequence per partition.
    producers: Mutex<HashMap<String, TxnProducer>>,
}

struct TxnProducer {
    id: (i64, i16),
    sequences: HashMap<(String, i32), i32>,
}

/// What a failed call says about the client it used.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Could not connect: nothing was sent, so the call may be repeated.
    NotSent,
    /// The connection broke or the call timed out: the request may or may not have been served.
    Broken,
    /// The cluster refused it because the client's metadata is out of date; nothing was done.
    Stale,
    /// Anything else: a final answer.
    Final,
}

fn classify(e: &ClientError) -> Failure {
    match e {
        ClientError::Connect { .. } => Failure::NotSent,
        ClientError::Io { .. } | ClientError::Closed(_) | ClientError::Timeout(_) | ClientError::Protocol(_) => {
            Failure::Broken
        }
        ClientError::Kafka { code, .. } => match code {
            ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::NotController
            | ResponseError::NotCoordinator
            | ResponseError::BrokerNotAvailable => Failure::Stale,
            _ => Failure::Final,
        },
        ClientError::Unsupported { .. } => Failure::Final,
    }
}

fn server_error(what: &str, e: ClientError) -> TopicError {
    TopicError::new(format!("{what}: {e}"))
}

impl KafkaTopics {
    /// Topics of the cluster at `bootstrap` (`HOST:PORT`, or several separated by commas). Does
    /// not connect yet; see [`KafkaTopics::cluster_id`].
    pub fn new(bootstrap: &str, runtime: Handle) -> KafkaTopics {
        KafkaTopics {
            bootstrap: bootstrap.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            runtime,
            client: Mutex::default(),
            partitions: Mutex::default(),
            producers: Mutex::default(),
        }
    }

    /// Connects (if not connected) and asks the cluster for its id. Blocking.
    pub fn cluster_id(&self) -> freshet_common::topics::Result<String> {
        self.call(true, |c| async move {
            let req = MetadataRequest::default().with_topics(Some(vec![]));
            let resp = c.bootstrap().send(&req, 12).await?;
            Ok(resp.cluster_id.map(|s| s.to_string()).unwrap_or_default())
        })
        .map_err(|e| server_error(&format!("cannot reach the Kafka cluster at {}", self.bootstrap.join(",")), e))
    }

    fn timeout() -> Duration {
        Duration::from_millis(SQL_KAFKA_REQUEST_TIMEOUT_MS)
    }

    /// Runs a future on the runtime, bounded.
    fn block<T>(&self, f: impl Future<Output = freshet_client::Result<T>>) -> freshet_client::Result<T> {
        let limit = Self::timeout();
        // The timer is made inside the runtime: the engine's thread has no runtime context.
        self.runtime
            .block_on(async move { tokio::time::timeout(limit, f).await })
            .unwrap_or(Err(ClientError::Timeout(limit)))
    }

    /// The client, connecting first if there is none.
    fn client(&self) -> freshet_client::Result<Arc<Client>> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            // A connection the cluster closed meanwhile (a restart, an idle timeout): connect
            // again before sending, so even a write can go out on the new connection.
            let c = c.clone();
            if !self.runtime.block_on(async { c.is_broken().await }) {
                return Ok(c);
            }
            tracing::debug!("a connection to the Kafka cluster broke; connecting again");
            *slot = None;
        }
        let mut last = ClientError::Protocol("no bootstrap address".into());
        for addr in &self.bootstrap {
            match self.block(Client::connect_as(addr, "freshet-sql")) {
                Ok(c) => {
                    let c = Arc::new(c);
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cannot connect to the Kafka cluster");
                    // A timeout while connecting: nothing was sent either.
                    last = match e {
                        ClientError::Timeout(_) => ClientError::Connect {
                            addr: addr.clone(),
                            source: std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()),
                        },
                        e => e,
                    };
                }
            }
        }
        Err(last)
    }

    fn forget_client(&self) {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Runs a call against the cluster, reconnecting and trying again (at most
    /// `SQL_KAFKA_ATTEMPTS` times) after a broken connection or stale metadata; a call that is
    /// not `repeatable` (a write) is tried again only when it cannot have been served.
    fn call<T, Fut>(&self, repeatable: bool, f: impl Fn(Arc<Client>) -> Fut) -> freshet_client::Result<T>
    where
        Fut: Future<Output = freshet_client::Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let result = self.client().and_then(|c| self.block(f(c)));
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let failure = classify(&e);
            if matches!(failure, Failure::Broken | Failure::Stale) {
                self.forget_client();
            }
            let again = match failure {
                Failure::NotSent | Failure::Stale => true,
                Failure::Broken => repeatable,
                Failure::Final => false,
            };
            if !again || attempt >= SQL_KAFKA_ATTEMPTS {
                return Err(e);
            }
            tracing::debug!(attempt, error = %e, "a call to the Kafka cluster failed; trying again");
            attempt += 1;
            std::thread::sleep(Duration::from_millis(SQL_KAFKA_RETRY_BACKOFF_MS));
        }
    }

    /// InitProducerId for `owner`, waiting (bounded) while the coordinator completes or aborts
    /// the owner's previous transaction (CONCURRENT_TRANSACTIONS).
    fn init_transactions(&self, owner: &str) -> freshet_common::topics::Result<(i64, i16)> {
        let deadline = Instant::now() + Self::timeout();
        loop {
            match self.call(true, |c| async move { c.init_transactions(owner, SQL_TXN_TIMEOUT_MS).await }) {
                Ok(id) => return Ok(id),
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ResponseError::ConcurrentTransactions | ResponseError::CoordinatorLoadInProgress)
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(SQL_KAFKA_RETRY_BACKOFF_MS / 4));
                }
                Err(e) => return Err(server_error(&format!("transaction of {owner}: init"), e)),
            }
        }
    }

    fn forget_partitions(&self, topic: &str) {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner()).remove(topic);
    }

    /// Partition count and whether every partition has a leader, from fresh metadata; None if
    /// the topic does not exist.
    fn describe(&self, topic: &str) -> freshet_client::Result<Option<(i32, bool)>> {
        let infos = self.call(true, |c| async move { c.metadata(Some(&[topic]), false).await })?;
        let Some(info) = infos.into_iter().find(|t| t.name == topic) else { return Ok(None) };
        if info.partitions.is_empty() {
            return if info.error_code == 0 || info.error_code == ResponseError::UnknownTopicOrPartition.code() {
                Ok(None)
            } else {
                // Being created (LEADER_NOT_AVAILABLE) or not visible to us.
                Err(ClientError::kafka(info.error_code, None))
            };
        }
        let led = info.partitions.iter().all(|p| p.leader >= 0);
        Ok(Some((info.partitions.len() as i32, led)))
    }

    /// One Fetch (read_committed) from `at`, following the log start if `at` is below it.
    fn fetch(&self, topic: &str, partition: i32, at: i64) -> freshet_client::Result<freshet_client::Fetched> {
        let fetch = |at: i64| {
            self.call(true, |c| async move {
                c.fetch_isolated(topic, partition, at, Duration::ZERO, SQL_READ_MAX_BYTES as i32, READ_COMMITTED).await
            })
        };
        match fetch(at) {
            Err(e) if e.code() == Some(ResponseError::OffsetOutOfRange) => {
                // Below the log start (retention, DeleteRecords): go on from the earliest record;
                // beyond the end: nothing to read yet.
                let earliest = self.call(true, |c| async move {
                    c.list_offset_isolated(topic, partition, EARLIEST, READ_COMMITTED).await
                })?;
                if at < earliest {
                    fetch(earliest)
                } else {
                    Ok(freshet_client::Fetched { last_stable_offset: at, ..Default::default() })
                }
            }
            other => other,
        }
    }
}

impl SqlTopics for KafkaTopics {
    fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
    ) -> freshet_common::topics::Result<()> {
        let configs: Vec<(String, String)> = config.overrides().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let created = self.call(true, |c| {
            let configs = &configs;
            async move { c.create_topic(name, partitions, configs).await }
        });
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some(ResponseError::TopicAlreadyExists) => {
                tracing::debug!(topic = name, "topic already exists");
            }
            Err(e) => return Err(server_error(&format!("cannot create topic {name}"), e)),
        }
        self.forget_partitions(name);
        // Kafka creates topics asynchronously: wait (bounded) until every partition has a leader.
        let deadline = Instant::now() + Self::timeout();
        loop {
            match self.describe(name) {
                Ok(Some((_, true))) => return Ok(()),
                Ok(_) => {}
                Err(e) if classify(&e) == Failure::Final && e.code() != Some(ResponseError::LeaderNotAvailable) => {
                    return Err(server_error(&format!("cannot create topic {name}"), e))
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(TopicError::new(format!(
                    "topic {name} was created but its partitions have no leader after {:?}",
                    Self::timeout()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// InitProducerId for `owner` (again if it was already): the coordinator completes a
    /// transaction that was being committed, aborts one left open, and fences whoever wrote as
    /// `owner` before; the producer is kept for the owner's next write.
    fn settle_atomic(&self, owner: &str) -> freshet_common::topics::Result<()> {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        producers.remove(owner);
        let id = self.init_transactions(owner)?;
        producers.insert(owner.to_string(), TxnProducer { id, sequences: HashMap::new() });
        Ok(())
    }

    fn visible_topics(&self) -> Vec<(String, i32)> {
        match self.call(true, |c| async move { c.metadata(None, false).await }) {
            Ok(infos) => infos
                .into_iter()
                // Kafka's internal topics (__consumer_offsets, __transaction_state).
                .filter(|t| !t.name.starts_with("__"))
                .map(|t| (t.name, t.partitions.len() as i32))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the Kafka cluster's topics");
                vec![]
            }
        }
    }
}

impl Topics for KafkaTopics {
    fn create_topic(&self, name: &str, partitions: i32) -> freshet_common::topics::Result<()> {
        self.create_topic_with(name, partitions, TopicConfig::default())
    }

    fn delete_topic(&self, name: &str) -> freshet_common::topics::Result<()> {
        let deleted = self.call(true, |c| async move { c.delete_topic(name).await });
        self.forget_partitions(name);
        match deleted {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ResponseError::UnknownTopicOrPartition) => Ok(()),
            Err(e) => Err(server_error(&format!("cannot delete topic {name}"), e)),
        }
    }

    fn partitions(&self, name: &str) -> Option<i32> {
        let max_age = Duration::from_millis(SQL_KAFKA_METADATA_MAX_AGE_MS);
        let cached = self.partitions.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied();
        if let Some((n, _)) = cached.filter(|(_, at)| at.elapsed() < max_age) {
            return Some(n);
        }
        match self.describe(name) {
            Ok(Some((n, _))) => {
                self.partitions.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), (n, Instant::now()));
                Some(n)
            }
            Ok(None) => {
                self.forget_partitions(name);
                None
            }
            Err(e) => {
                // The cluster is unreachable or the topic is being created: what we knew.
                tracing::debug!(topic = name, error = %e, "cannot read the topic's metadata");
                cached.map(|(n, _)| n)
            }
        }
    }

    fn list_topics(&self) -> Vec<String> {
        match self.call(true, |c| async move { c.metadata(None, false).await }) {
            Ok(infos) => infos.into_iter().map(|t| t.name).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the Kafka cluster's topics");
                vec![]
            }
        }
    }

    fn append(&self, topic: &str, partition: i32, records: Vec<Record>) -> freshet_common::topics::Result<i64> {
        if records.is_empty() {
            return self.end_offset(topic, partition);
        }
        let mut first = None;
        for chunk in chunks(records) {
            let batch = records::encode(&chunk, Compression::None)
                .map_err(|e| server_error(&format!("cannot encode records for {topic}-{partition}"), e))?;
            let base = self
                .call(false, |c| {
                    let batch = batch.clone();
                    async move { c.produce(topic, partition, batch, ACKS_ALL).await }
                })
                .map_err(|e| server_error(&format!("cannot write to {topic}-{partition}"), e))?;
            first.get_or_insert(base);
        }
        Ok(first.unwrap_or(-1))
    }

    /// One Kafka transaction (transactional id `owner`): AddPartitionsToTxn, a transactional
    /// Produce per batch, EndTxn. A failure aborts it (or leaves it to the coordinator's
    /// timeout and the owner's next InitProducerId, which aborts it too) and forgets the
    /// producer, so the owner's next write starts with a new epoch.
    fn append_atomic(
        &self,
        owner: &str,
        writes: Vec<(String, i32, Vec<Record>)>,
    ) -> freshet_common::topics::Result<()> {
        let writes: Vec<_> = writes.into_iter().filter(|(_, _, r)| !r.is_empty()).collect();
        if writes.is_empty() {
            return Ok(());
        }
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        if !producers.contains_key(owner) {
            let id = self.init_transactions(owner)?;
            producers.insert(owner.to_string(), TxnProducer { id, sequences: HashMap::new() });
        }
        let producer = producers.get_mut(owner).expect("inserted above");
        let id = producer.id;
        let fail = |what: &str, e: ClientError| server_error(&format!("transaction of {owner}: {what}"), e);
        let outcome = (|| -> freshet_common::topics::Result<()> {
            let partitions: Vec<(String, i32)> = writes.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
            let partitions = &partitions;
            self.call(true, |c| async move { c.add_partitions_to_txn(owner, id, partitions).await })
                .map_err(|e| fail("add partitions", e))?;
            for (topic, partition, records) in writes {
                for chunk in chunks(records) {
                    let seq = producer.sequences.entry((topic.clone(), partition)).or_insert(0);
                    let batch = records::encode_transactional(&chunk, id, *seq)
                        .map_err(|e| fail(&format!("encoding records for {topic}-{partition}"), e))?;
                    let topic = topic.as_str();
                    self.call(false, |c| {
                        let batch = batch.clone();
                        async move { c.produce_transactional(owner, topic, partition, batch).await }
                    })
                    .map_err(|e| fail(&format!("writing to {topic}-{partition}"), e))?;
                    *seq = seq.wrapping_add(chunk.len() as i32);
                }
            }
            Ok(())
        })();
        if outcome.is_ok() && failpoint("sql-kafka-before-commit") {
            tracing::error!(owner, "failpoint sql-kafka-before-commit: the process ends with its transaction open");
            std::process::abort();
        }
        let commit = outcome.is_ok();
        let ended = self.call(false, |c| async move { c.end_txn(owner, id, commit).await });
        if outcome.is_err() || ended.is_err() {
            producers.remove(owner);
        }
        outcome?;
        ended.map_err(|e| fail("commit", e))
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> freshet_common::topics::Result<Vec<Consumed>> {
        let mut at = offset.max(0);
        let mut out = Vec::new();
        while out.len() < max {
            let fetched = self
                .fetch(topic, partition, at)
                .map_err(|e| server_error(&format!("reading {topic}-{partition}"), e))?;
            if fetched.records.is_empty() {
                break;
            }
            let aborted = fetched.aborted.iter().map(|(pid, first)| (*pid, (*first).max(0) as u64));
            match decode_committed(topic, partition, fetched.records.clone(), aborted, offset, max, &mut out)? {
                Some(next) if next as i64 > at => at = next as i64,
                _ => break,
            }
            if at >= fetched.last_stable_offset {
                break;
            }
        }
        Ok(out)
    }

    fn end_offset(&self, topic: &str, partition: i32) -> freshet_common::topics::Result<i64> {
        self.call(true, |c| async move { c.list_offset_isolated(topic, partition, LATEST, READ_COMMITTED).await })
            .map_err(|e| server_error(&format!("offsets of {topic}-{partition}"), e))
    }

    fn delete_before(&self, topic: &str, partition: i32, offset: i64) -> freshet_common::topics::Result<()> {
        // Repeatable: deleting below the same offset again changes nothing.
        self.call(true, |c| async move { c.delete_records(topic, partition, offset).await })
            .map(|_| ())
            .map_err(|e| server_error(&format!("deleting records of {topic}-{partition}"), e))
    }
}

impl GroupOffsets for KafkaTopics {
    fn committed(&self, group: &str, topic: &str) -> freshet_common::topics::Result<BTreeMap<i32, i64>> {
        let all = self
            .call(true, |c| async move { c.committed_offsets(group).await })
            .map_err(|e| server_error(&format!("committed offsets of group {group}"), e))?;
        Ok(all.into_iter().filter(|((t, _), _)| t == topic).map(|((_, p), o)| (p, o)).collect())
    }

    fn commit(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
        member: Option<&Member>,
    ) -> freshet_common::topics::Result<()> {
        let entries: Vec<((String, i32), i64)> = offsets.iter().map(|(p, o)| ((topic.to_string(), *p), *o)).collect();
        // A commit of the same offsets again is harmless: repeatable.
        self.call(true, |c| {
            let entries = entries.clone();
            let member = member.cloned();
            async move {
                match member {
                    Some(m) => c.commit_offsets_as(group, &m.id, m.epoch, &entries).await,
                    None => c.commit_offsets(group, &entries).await,
                }
            }
        })
        .map_err(|e| server_error(&format!("committing offsets of group {group}"), e))
    }

    /// ConsumerGroupHeartbeat (KIP-848); a cluster without it (UNSUPPORTED_VERSION) has no
    /// membership: `Ok(None)`, one owner of every partition.
    fn heartbeat(
        &self,
        group: &str,
        topic: &str,
        member: &mut Member,
        owned: &[i32],
    ) -> freshet_common::topics::Result<Option<Vec<i32>>> {
        let id = self
            .call(true, |c| async move { c.topic(topic).await })
            .map_err(|e| server_error(&format!("metadata of {topic}"), e))?
            .id;
        let subscribed = [topic.to_string()];
        let owned = [(id.clone(), owned.to_vec())];
        let (member_id, epoch) = (member.id.clone(), member.epoch);
        let (subscribed, owned, instance) = (&subscribed, &owned, member.instance_id.as_deref());
        let answer = self.call(false, |c| {
            let member_id = member_id.clone();
            async move {
                c.consumer_group_heartbeat(
                    group,
                    &member_id,
                    epoch,
                    instance,
                    (epoch == 0).then_some(&subscribed[..]),
                    Some(&owned[..]),
                )
                .await
            }
        });
        let (member_id, epoch, assigned, _interval) = match answer {
            Ok(a) => a,
            Err(freshet_client::ClientError::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(server_error(&format!("heartbeat in group {group}"), e)),
        };
        member.id = member_id;
        member.epoch = epoch;
        Ok(assigned.map(|a| a.into_iter().filter(|(t, _)| *t == id).flat_map(|(_, ps)| ps).collect()))
    }

    fn leave(&self, group: &str, member: &Member) -> freshet_common::topics::Result<()> {
        let (member_id, instance) = (member.id.clone(), member.instance_id.as_deref());
        self.call(false, |c| {
            let member_id = member_id.clone();
            async move { c.consumer_group_heartbeat(group, &member_id, -1, instance, None, None).await }
        })
        .map(|_| ())
        .map_err(|e| server_error(&format!("leaving group {group}"), e))
    }
}

/// Records as the client's `NewRecord`s, in runs of about `SQL_KAFKA_BATCH_BYTES` (one batch
/// each), in order.
fn chunks(records: Vec<Record>) -> Vec<Vec<NewRecord>> {
    let mut out = vec![];
    let mut chunk: Vec<NewRecord> = vec![];
    let mut chunk_bytes = 0;
    for r in records {
        chunk_bytes += r.estimated_size();
        chunk.push(NewRecord {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|(k, v)| (k, v.map(Bytes::from))).collect(),
            timestamp: r.timestamp,
        });
        if chunk_bytes >= SQL_KAFKA_BATCH_BYTES {
            out.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}
