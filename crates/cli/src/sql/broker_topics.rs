//! [`Topics`] over the embedded broker: the SQL engine's fast path, no sockets.
//!
//! Appends are the broker's own Produce path without the network: one uncompressed v2 record
//! batch (timestamps, keys, headers) per call, queued on the partition's writer, and answered
//! once it is as durable as an `acks=all` producer's write. Reads decode the stored batches
//! (any compression) the way a `read_committed` consumer does: up to the last stable offset,
//! without control records and without records of aborted transactions. So the engine's records
//! are ordinary Kafka records to every client, and clients' records are input to the engine.
//!
//! Every call blocks; it must run on a thread outside the tokio runtime (the engine's thread),
//! with a handle to the runtime for the partition writer and the durability wait.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use freshet_broker::groups::{Committed, Heartbeat};
use freshet_broker::{is_internal, now_ms, Broker, BrokerError, Partition};
use freshet_common::config::TopicConfig;
use freshet_common::limits::{
    ENCODE_BUFFER_KEEP_BYTES, READ_RESERVE_RECORDS, SQL_APPEND_TIMEOUT_MS, SQL_KAFKA_BATCH_BYTES, SQL_READ_MAX_BYTES,
    SQL_TXN_TIMEOUT_MS,
};
use freshet_common::topics::{split_by_size, TopicError};
use freshet_log::batch::{self, BatchHeader};
use freshet_sql::topics::{Consumed, GroupOffsets, Member, Record, Topics};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::runtime::Handle;

use super::SqlTopics;

pub struct BrokerTopics {
    broker: Arc<Broker>,
    runtime: Handle,
    /// Per transaction owner (a query): its producer id and epoch, and the next sequence per
    /// partition.
    producers: Mutex<HashMap<String, TxnProducer>>,
}

struct TxnProducer {
    id: (i64, i16),
    sequences: HashMap<(String, i32), i32>,
}

impl BrokerTopics {
    pub fn new(broker: Arc<Broker>, runtime: Handle) -> BrokerTopics {
        BrokerTopics { broker, runtime, producers: Mutex::new(HashMap::new()) }
    }

    /// Appends one batch, as a transactional producer's when `producer` is (id, epoch, base
    /// sequence); answered once as durable as an `acks=all` write.
    fn append_batch(
        &self,
        topic: &str,
        partition: i32,
        records: &[Record],
        producer: Option<(i64, i16, i32)>,
    ) -> freshet_common::topics::Result<i64> {
        let first = self.append_batches(topic, &[(partition, records, producer)])?;
        Ok(first[0])
    }

    /// Appends batches to partitions of `topic`, each item one batch (partition, records, and
    /// the transactional producer's (id, epoch, base sequence) if any), and returns each one's
    /// first offset once all are as durable as `acks=all` writes. Every batch is queued on its
    /// partition's writer before any is waited for, so the writes and fsyncs of different
    /// partitions overlap (one partition's batches keep their order in its queue). The batches
    /// are encoded into this thread's [`ENCODE`] buffer, whose allocation the next call reuses.
    fn append_batches(&self, topic: &str, items: &[BatchItem<'_>]) -> freshet_common::topics::Result<Vec<i64>> {
        if is_internal(topic) {
            return Err(TopicError::new(format!("'{topic}' is an internal topic")));
        }
        let t = self.broker.topic(topic).ok_or_else(|| TopicError::new(format!("topic {topic} does not exist")))?;
        // The rules Produce applies to an acks=all producer.
        let rules = t.produce_rules();
        if rules.min_insync_replicas > 1 {
            return Err(TopicError::new(format!(
                "cannot write to {topic}: min.insync.replicas is {} but a single node has one replica",
                rules.min_insync_replicas
            )));
        }
        let mut batches = Vec::with_capacity(items.len());
        let mut total = 0;
        for (partition, records, _) in items {
            let p = t
                .partition(*partition)
                .ok_or_else(|| TopicError::new(format!("topic {topic} has no partition {partition}")))?;
            if rules.keys_required && records.iter().any(|r| r.key.is_none()) {
                return Err(TopicError::new(format!(
                    "cannot write to {topic}: a compacted topic only accepts records with a key"
                )));
            }
            if records.is_empty() {
                return Err(TopicError::new(format!("cannot write an empty batch to {topic}-{partition}")));
            }
            total += batch::encoded_size_bound(records);
            batches.push(p);
        }
        let encoded = ENCODE.with(|enc| {
            let mut enc = enc.borrow_mut();
            let (buf, allocated) = &mut *enc;
            if total > *allocated {
                // A new allocation with room to spare: growing the old one would copy its
                // stale contents, and flushes vary in size.
                *allocated = total + total / 2;
                *buf = BytesMut::with_capacity(*allocated);
            } else {
                // Room for all of them at once: reclaims the allocation the last call split its
                // batches from, if the writers have dropped them all (they have, once durable).
                buf.reserve(total);
            }
            let mut encoded = Vec::with_capacity(items.len());
            for (_, records, producer) in items {
                batch::encode_batch_into(&mut *buf, records);
                let mut bytes = buf.split();
                if let Some((pid, epoch, sequence)) = producer {
                    batch::set_producer(&mut bytes, *pid, *epoch, *sequence, true);
                }
                // Our own encoding: the header is all the partition needs.
                debug_assert!(batch::validate(&bytes).is_ok());
                let header =
                    BatchHeader::parse(&bytes).map_err(|e| TopicError::new(format!("record batch refused: {e}")))?;
                encoded.push((bytes, header));
            }
            if total > ENCODE_BUFFER_KEEP_BYTES {
                // A rare large write: do not keep its memory for the thread's life.
                *enc = Default::default();
            }
            Ok::<_, TopicError>(encoded)
        })?;
        let timeout = Duration::from_millis(SQL_APPEND_TIMEOUT_MS);
        let now = now_ms();
        let written = self.runtime.block_on(async move {
            // Queued all first (in order: a partition's batches keep it), then awaited.
            let queued: Vec<_> =
                batches.iter().zip(encoded).map(|(p, (bytes, header))| p.append(bytes, header, now)).collect();
            let mut first = Vec::with_capacity(queued.len());
            // Per partition, the end offset it must make durable (a short list: few partitions).
            let mut durable: Vec<(&Arc<Partition>, u64)> = vec![];
            let mut failed = None;
            for (p, rx) in batches.iter().zip(queued) {
                let appended = match rx.await {
                    Ok(Ok(a)) => a,
                    Ok(Err((code, message))) => {
                        failed.get_or_insert_with(|| (p.index, format!("{code:?}: {message}")));
                        continue;
                    }
                    Err(_) => {
                        failed.get_or_insert_with(|| (p.index, "the partition's writer stopped".to_string()));
                        continue;
                    }
                };
                first.push(appended.info.base_offset as i64);
                if appended.needs_sync {
                    let end = appended.info.last_offset + 1;
                    match durable.iter_mut().find(|(q, _)| Arc::ptr_eq(q, p)) {
                        Some((_, e)) => *e = (*e).max(end),
                        None => durable.push((p, end)),
                    }
                }
            }
            if let Some(f) = failed {
                return Err(f);
            }
            for (p, end) in durable {
                p.wait_durable(end, timeout)
                    .await
                    .map_err(|code| (p.index, format!("the write did not become durable: {code:?}")))?;
            }
            Ok(first)
        });
        written.map_err(|(partition, m)| TopicError::new(format!("cannot write to {topic}-{partition}: {m}")))
    }

    fn partition(&self, topic: &str, partition: i32) -> freshet_common::topics::Result<Arc<Partition>> {
        let t = self.broker.topic(topic).ok_or_else(|| TopicError::new(format!("topic {topic} does not exist")))?;
        t.partition(partition).ok_or_else(|| TopicError::new(format!("topic {topic} has no partition {partition}")))
    }
}

/// One batch for [`BrokerTopics::append_batches`]: the partition, its records, and a
/// transactional producer's (id, epoch, base sequence) if any.
type BatchItem<'a> = (i32, &'a [Record], Option<(i64, i16, i32)>);

thread_local! {
    /// Each writing thread's buffer for encoding record batches (see
    /// [`BrokerTopics::append_batches`]): the batches of a write are split off it, and once the
    /// partition writers have written and dropped them its allocation serves the next write,
    /// instead of fresh memory the kernel faults in and zeroes again.
    /// With the size of its allocation.
    static ENCODE: std::cell::RefCell<(BytesMut, usize)> = Default::default();
}

/// Whether a record batch is an aborted transaction's, tracked as a consumer does: a producer's
/// aborted transaction starts at its first offset (from the read's aborted list) and ends at its
/// abort marker.
#[derive(Default)]
struct AbortFilter {
    /// (first offset, producer id) of aborted transactions not yet reached, in offset order.
    pending: BTreeSet<(u64, i64)>,
    open: HashSet<i64>,
}

impl AbortFilter {
    fn skip(&mut self, header: &BatchHeader) -> bool {
        let base = header.base_offset as u64;
        while let Some(&(first, pid)) = self.pending.first() {
            if first > base {
                break;
            }
            self.pending.pop_first();
            self.open.insert(pid);
        }
        if !header.is_transactional() {
            return false;
        }
        if header.is_control() {
            // A marker (commit or abort) ends the producer's transaction either way.
            self.open.remove(&header.producer_id);
            return true;
        }
        self.open.contains(&header.producer_id)
    }
}

/// Decodes fetched record batches as a `read_committed` consumer sees them: no control records,
/// no records of aborted transactions (`aborted`: (producer id, first offset) as Fetch reports
/// them), none before `from`, at most `max` in `out` in all. Any compression. Returns the offset
/// after the last whole batch looked at (None: no whole batch). Shared by [`BrokerTopics`] and
/// [`super::kafka_topics::KafkaTopics`].
pub(super) fn decode_committed(
    topic: &str,
    partition: i32,
    mut rest: Bytes,
    aborted: impl IntoIterator<Item = (i64, u64)>,
    from: i64,
    max: usize,
    out: &mut Vec<Consumed>,
) -> freshet_common::topics::Result<Option<u64>> {
    let mut filter =
        AbortFilter { pending: aborted.into_iter().map(|(pid, first)| (first, pid)).collect(), ..Default::default() };
    let mut next = None;
    while let Some(size) = batch::peek_size(&rest).filter(|s| *s <= rest.len()) {
        let mut one = rest.split_to(size);
        let header =
            BatchHeader::parse(&one).map_err(|e| TopicError::new(format!("reading {topic}-{partition}: {e}")))?;
        next = Some(header.next_offset() as u64);
        if filter.skip(&header) || header.is_control() {
            continue;
        }
        if out.capacity() == out.len() {
            // Room for what this read likely holds (this batch's record size), not reallocated
            // record by record.
            let per_record = (size / (header.records_count.max(1) as usize)).max(1);
            out.reserve((max - out.len()).min(rest.len() / per_record + header.records_count.max(0) as usize));
        }
        if decode_plain(&header, &one, from, max, partition, out)
            .map_err(|e| TopicError::new(format!("reading {topic}-{partition}: {e}")))?
        {
            if out.len() >= max {
                break;
            }
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut one)
            .map_err(|e| TopicError::new(format!("reading {topic}-{partition}: {e}")))?;
        for r in set.records {
            if r.offset < from || r.control || out.len() >= max {
                continue;
            }
            let timestamp = if header.is_log_append_time() { header.max_timestamp } else { r.timestamp };
            out.push(Consumed {
                partition,
                offset: r.offset,
                record: Record {
                    key: r.key,
                    value: r.value,
                    timestamp,
                    headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v.map(|v| v.to_vec()))).collect(),
                },
            });
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(next)
}

/// The fast path of [`decode_committed`]: an uncompressed batch without record headers, the
/// kind the embedded broker's own writers (SQL, functions) and most producers write, decoded
/// without `kafka-protocol`'s per-record structures; the CRC is checked as its decoder does.
/// Keys and values are slices of `batch`. False (nothing decoded) for any other batch.
fn decode_plain(
    header: &BatchHeader,
    batch: &Bytes,
    from: i64,
    max: usize,
    partition: i32,
    out: &mut Vec<Consumed>,
) -> Result<bool, String> {
    if header.compression() != 0 {
        return Ok(false);
    }
    batch::validate_stored(batch).map_err(|e| e.to_string())?;
    // Converted record by record (no vector of views); a record with headers sends the whole
    // batch to the general decoder.
    let start = out.len();
    let mut headers = false;
    let whole = batch::for_each_record(batch, |r| {
        if !r.headers.is_empty() {
            headers = true;
            return false;
        }
        if r.offset >= from && out.len() < max {
            out.push(Consumed {
                partition,
                offset: r.offset,
                record: Record {
                    key: r.key.map(|k| batch.slice_ref(k)),
                    value: r.value.map(|v| batch.slice_ref(v)),
                    timestamp: if header.is_log_append_time() { header.max_timestamp } else { r.timestamp },
                    headers: vec![],
                },
            });
        }
        true
    });
    if whole.is_none() || headers {
        out.truncate(start);
    }
    whole.ok_or("malformed records")?;
    Ok(!headers)
}

impl SqlTopics for BrokerTopics {
    fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
    ) -> freshet_common::topics::Result<()> {
        match self.broker.create_topic(name, partitions, config, false) {
            Ok(_) => Ok(()),
            // Created meanwhile by a client: as good.
            Err(e @ BrokerError::Kafka { .. }) if self.broker.topic(name).is_some() => {
                tracing::debug!(topic = name, error = %e, "topic already exists");
                Ok(())
            }
            Err(e) => Err(TopicError::new(format!("cannot create topic {name}: {e}"))),
        }
    }

    fn visible_topics(&self) -> Vec<(String, i32)> {
        self.broker
            .topics()
            .iter()
            .filter(|t| !is_internal(&t.name))
            .map(|t| (t.name.clone(), t.partition_count()))
            .collect()
    }

    /// Initializes `owner`'s transactional producer now, again if it was already: the
    /// coordinator completes a transaction that was being committed and aborts one left open,
    /// fences whoever wrote as `owner` before (another SQL server that ran the query, or this
    /// one before it handed the query over), and the producer (with its new epoch) is kept for
    /// the owner's next write.
    fn settle_atomic(&self, owner: &str) -> freshet_common::topics::Result<()> {
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        producers.remove(owner);
        let (txns, broker, owner2) = (self.broker.txns().clone(), self.broker.clone(), owner.to_string());
        let id = self
            .runtime
            .block_on(async move { txns.init(&broker, &owner2, SQL_TXN_TIMEOUT_MS, None).await })
            .map_err(|(code, message)| TopicError::new(format!("transaction of {owner}: init: {code:?}: {message}")))?;
        producers.insert(owner.to_string(), TxnProducer { id, sequences: Default::default() });
        Ok(())
    }
}

impl Topics for BrokerTopics {
    fn create_topic(&self, name: &str, partitions: i32) -> freshet_common::topics::Result<()> {
        self.create_topic_with(name, partitions, TopicConfig::default())
    }

    fn delete_topic(&self, name: &str) -> freshet_common::topics::Result<()> {
        if self.broker.topic(name).is_none() {
            return Ok(());
        }
        self.broker
            .delete_topic(name)
            .map(|_| ())
            .map_err(|e| TopicError::new(format!("cannot delete topic {name}: {e}")))
    }

    fn partitions(&self, name: &str) -> Option<i32> {
        self.broker.topic(name).map(|t| t.partition_count())
    }

    fn list_topics(&self) -> Vec<String> {
        self.broker.topics().iter().map(|t| t.name.clone()).collect()
    }

    fn append(&self, topic: &str, partition: i32, records: Vec<Record>) -> freshet_common::topics::Result<i64> {
        if records.is_empty() {
            return self.end_offset(topic, partition);
        }
        let items: Vec<_> =
            split_by_size(&records, SQL_KAFKA_BATCH_BYTES).into_iter().map(|r| (partition, r, None)).collect();
        Ok(self.append_batches(topic, &items)?[0])
    }

    /// All partitions' batches queued at once and their fsyncs awaited together (see
    /// [`BrokerTopics::append_batches`]), not one partition's write and fsync after the other.
    fn append_partitions(&self, topic: &str, partitions: &mut [Vec<Record>]) -> freshet_common::topics::Result<()> {
        let items: Vec<_> = partitions
            .iter()
            .enumerate()
            .flat_map(|(p, records)| {
                split_by_size(records, SQL_KAFKA_BATCH_BYTES).into_iter().map(move |r| (p as i32, r, None))
            })
            .collect();
        if !items.is_empty() {
            self.append_batches(topic, &items)?;
        }
        for records in partitions {
            records.clear();
        }
        Ok(())
    }

    /// A transaction of the broker's transaction coordinator, in process: the writes of one
    /// owner (a query) are committed together, and an owner's transaction left open by a crash
    /// is aborted when the owner writes again (its producer epoch is bumped).
    fn append_atomic(
        &self,
        owner: &str,
        writes: Vec<(String, i32, Vec<Record>)>,
    ) -> freshet_common::topics::Result<()> {
        let writes: Vec<_> = writes.into_iter().filter(|(_, _, r)| !r.is_empty()).collect();
        if writes.is_empty() {
            return Ok(());
        }
        let txns = self.broker.txns().clone();
        let fail = |what: &str, (code, message): (kafka_protocol::ResponseError, String)| {
            TopicError::new(format!("transaction of {owner}: {what}: {code:?}: {message}"))
        };
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, epoch) = match producers.get(owner) {
            Some(p) => p.id,
            None => {
                let broker = self.broker.clone();
                let t = txns.clone();
                let owner2 = owner.to_string();
                let id = self
                    .runtime
                    .block_on(async move { t.init(&broker, &owner2, SQL_TXN_TIMEOUT_MS, None).await })
                    .map_err(|e| fail("init", e))?;
                producers.insert(owner.to_string(), TxnProducer { id, sequences: Default::default() });
                id
            }
        };
        let partitions: Vec<(String, i32)> = writes.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let outcome = (|| -> freshet_common::topics::Result<()> {
            let t = txns.clone();
            let owner2 = owner.to_string();
            self.runtime
                .block_on(async move { t.add_partitions(&owner2, pid, epoch, partitions).await })
                .map_err(|e| fail("add partitions", e))?;
            let producer = producers.get_mut(owner).expect("inserted above");
            for (topic, partition, records) in writes {
                // In batches the topic accepts (max.message.bytes is about 1 MiB by default).
                for run in split_by_size(&records, SQL_KAFKA_BATCH_BYTES) {
                    let n = run.len() as i32;
                    let seq = producer.sequences.entry((topic.clone(), partition)).or_insert(0);
                    self.append_batch(&topic, partition, run, Some((pid, epoch, *seq)))?;
                    *seq = seq.wrapping_add(n);
                }
            }
            Ok(())
        })();
        let commit = outcome.is_ok();
        let broker = self.broker.clone();
        let owner2 = owner.to_string();
        let ended = self.runtime.block_on(async move { txns.end(&broker, &owner2, pid, epoch, commit).await });
        if outcome.is_err() || ended.is_err() {
            // Start over with a new epoch next time (the coordinator fences the old one).
            producers.remove(owner);
        }
        outcome?;
        ended.map_err(|e| fail(if commit { "commit" } else { "abort" }, e))
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> freshet_common::topics::Result<Vec<Consumed>> {
        let p = self.partition(topic, partition)?;
        let err = |what: &'static str| {
            move |code: kafka_protocol::ResponseError| {
                TopicError::new(format!("reading {topic}-{partition}: {what}: {code:?}"))
            }
        };
        let (start, _high_watermark, stable) = p.stable_offsets().map_err(err("offsets"))?;
        // Below the log start (retention, DeleteRecords): go on from the earliest record.
        let mut at = (offset.max(0) as u64).max(start);
        // At most one record per offset: sized once, not grown (and copied) read by read.
        let mut out = Vec::with_capacity(max.min(stable.saturating_sub(at) as usize).min(READ_RESERVE_RECORDS));
        while at < stable && out.len() < max {
            let read = p.read(at, SQL_READ_MAX_BYTES, true, true).map_err(err("read"))?;
            if read.records.is_empty() {
                break;
            }
            let aborted = read.aborted.iter().map(|(pid, first)| (*pid, *first));
            match decode_committed(topic, partition, read.records.clone(), aborted, offset, max, &mut out)? {
                Some(next) if next > at => at = next,
                _ => break,
            }
        }
        Ok(out)
    }

    fn end_offset(&self, topic: &str, partition: i32) -> freshet_common::topics::Result<i64> {
        let p = self.partition(topic, partition)?;
        let (_, hw) =
            p.offsets().map_err(|code| TopicError::new(format!("offsets of {topic}-{partition}: {code:?}")))?;
        Ok(hw as i64)
    }

    fn delete_before(&self, topic: &str, partition: i32, offset: i64) -> freshet_common::topics::Result<()> {
        let p = self.partition(topic, partition)?;
        p.delete_records(offset)
            .map(|_| ())
            .map_err(|code| TopicError::new(format!("deleting records of {topic}-{partition}: {code:?}")))
    }
}

impl GroupOffsets for BrokerTopics {
    fn committed(&self, group: &str, topic: &str) -> freshet_common::topics::Result<BTreeMap<i32, i64>> {
        Ok(self
            .broker
            .groups()
            .offsets
            .fetch(group)
            .into_iter()
            .filter(|((t, _), c)| t == topic && c.offset >= 0)
            .map(|((_, p), c)| (p, c.offset))
            .collect())
    }

    /// Commits as an OffsetCommit does: from outside the group (generation -1, refused while the
    /// group has members) or as a member (its id and epoch).
    fn commit(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
        member: Option<&Member>,
    ) -> freshet_common::topics::Result<()> {
        let groups = self.broker.groups();
        let (id, epoch) = member.map(|m| (m.id.as_str(), m.epoch)).unwrap_or(("", -1));
        groups
            .check_commit(group, id, None, epoch)
            .map_err(|e| TopicError::new(format!("cannot commit offsets of group {group}: {e:?}")))?;
        let now = now_ms();
        let entries = offsets
            .iter()
            .map(|(p, o)| {
                let c = Committed { offset: *o, leader_epoch: -1, metadata: None, commit_timestamp: now };
                ((topic.to_string(), *p), c)
            })
            .collect();
        let groups = groups.clone();
        self.runtime
            .block_on(async move { groups.offsets.commit(group, entries).await })
            .map_err(|e| TopicError::new(format!("cannot commit offsets of group {group}: {e:?}")))
    }

    /// A ConsumerGroupHeartbeat without the network.
    fn heartbeat(
        &self,
        group: &str,
        topic: &str,
        member: &mut Member,
        owned: &[i32],
    ) -> freshet_common::topics::Result<Option<Vec<i32>>> {
        let t = self.broker.topic(topic).ok_or_else(|| TopicError::new(format!("topic {topic} does not exist")))?;
        let hb = Heartbeat {
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            instance_id: member.instance_id.clone(),
            rebalance_timeout: (member.epoch == 0).then_some(Duration::from_secs(60)),
            subscribed: (member.epoch == 0).then(|| vec![topic.to_string()]),
            owned: Some([(t.id, owned.iter().copied().collect())].into_iter().collect()),
            client_id: "freshet".into(),
            client_host: "in-process".into(),
            ..Default::default()
        };
        let broker = &self.broker;
        let shapes = |name: &str| broker.topic_shape(name);
        let answer = broker.groups().consumer_heartbeat(group, hb, &shapes);
        if let Some((code, why)) = answer.error {
            return Err(TopicError::new(format!("group {group}: {code:?}: {why}")));
        }
        member.id = answer.member_id;
        member.epoch = answer.member_epoch;
        Ok(answer.assignment.map(|a| a.get(&t.id).map(|ps| ps.iter().copied().collect()).unwrap_or_default()))
    }

    fn leave(&self, group: &str, member: &Member) -> freshet_common::topics::Result<()> {
        let hb = Heartbeat {
            member_id: member.id.clone(),
            member_epoch: -1,
            instance_id: member.instance_id.clone(),
            client_id: "freshet".into(),
            client_host: "in-process".into(),
            ..Default::default()
        };
        let broker = &self.broker;
        let shapes = |name: &str| broker.topic_shape(name);
        let answer = broker.groups().consumer_heartbeat(group, hb, &shapes);
        match answer.error {
            Some((code, why)) => Err(TopicError::new(format!("leaving group {group}: {code:?}: {why}"))),
            None => Ok(()),
        }
    }
}
