//! The only way the SQL engine and the functions runtime touch topics: the [`Topics`] trait (and
//! [`GroupOffsets`] for consumer-group offsets). Implementations: [`MemTopics`] (in memory, for
//! tests and `freshet sql-test`), the embedded broker (in-process fast path) and a Kafka client
//! (external clusters), both in the `freshet` binary.

use std::collections::BTreeMap;

pub use bytes::Bytes;
use std::sync::Mutex;

/// Why a topic operation failed, in words for a user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TopicError(pub String);

impl TopicError {
    pub fn new(message: impl Into<String>) -> TopicError {
        TopicError(message.into())
    }
}

pub type Result<T, E = TopicError> = std::result::Result<T, E>;

/// A record as the engine reads and writes it. Key and value are `Bytes`: a read can hand out
/// slices of the log's buffer instead of copies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// Roughly its size in a record batch (for splitting appends into batches a topic accepts).
    pub fn estimated_size(&self) -> usize {
        32 + self.key.as_ref().map_or(0, |b| b.len())
            + self.value.as_ref().map_or(0, |b| b.len())
            + self.headers.iter().map(|(k, v)| 8 + k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>()
    }
}

/// `records` in runs of at most `max_bytes` (estimated) each, in order, without moving them; a
/// record larger than that is a run of its own.
pub fn split_by_size(records: &[Record], max_bytes: usize) -> Vec<&[Record]> {
    let mut runs = vec![];
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let size = r.estimated_size();
        if i > start && bytes + size > max_bytes {
            runs.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        runs.push(&records[start..]);
    }
    runs
}

/// A record read back with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

pub trait Topics: Send + Sync {
    fn create_topic(&self, name: &str, partitions: i32) -> Result<()>;
    fn delete_topic(&self, name: &str) -> Result<()>;
    /// Number of partitions, `None` if the topic does not exist.
    fn partitions(&self, name: &str) -> Option<i32>;
    fn list_topics(&self) -> Vec<String>;
    /// Appends records to one partition, returning the offset of the first.
    fn append(&self, topic: &str, partition: i32, records: Vec<Record>) -> Result<i64>;
    /// Appends `partitions[p]` to partition `p` of `topic` for each non-empty one, each as
    /// durably as [`Topics::append`], leaving the vectors empty (their allocations are the
    /// caller's to reuse). Not atomic: after an error some partitions may hold their records.
    /// The default appends one partition after the other; an implementation may overlap them
    /// (the embedded broker waits for all their fsyncs at once).
    fn append_partitions(&self, topic: &str, partitions: &mut [Vec<Record>]) -> Result<()> {
        for (p, records) in partitions.iter_mut().enumerate() {
            if !records.is_empty() {
                self.append(topic, p as i32, std::mem::take(records))?;
            }
        }
        Ok(())
    }
    /// Reads up to `max` records from `offset`.
    fn read(&self, topic: &str, partition: i32, offset: i64, max: usize) -> Result<Vec<Consumed>>;
    /// The offset the next appended record will get.
    fn end_offset(&self, topic: &str, partition: i32) -> Result<i64>;

    /// The offset of the first record whose timestamp is at or after `timestamp` (the end
    /// offset if there is none). The default reads the partition from its start.
    fn offset_for_time(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let mut at = 0;
        loop {
            let records = self.read(topic, partition, at, 1024)?;
            let Some(last) = records.last() else {
                return self.end_offset(topic, partition);
            };
            if let Some(found) = records.iter().find(|c| c.record.timestamp >= timestamp) {
                return Ok(found.offset);
            }
            at = last.offset + 1;
        }
    }

    /// Deletes the records of a partition below `offset` (Kafka's DeleteRecords), for topics
    /// whose records are of no use once read (a query's repartition topic). The default keeps
    /// them: retention deletes them in time.
    fn delete_before(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let _ = (topic, partition, offset);
        Ok(())
    }

    /// Appends records to several partitions as one unit: a `read_committed` reader sees all of
    /// them or none, also across a crash (`owner` names the writer, e.g. a query, so a restarted
    /// writer can abort what its previous incarnation left open). The default appends one
    /// partition after the other: atomic only where the implementation overrides it.
    fn append_atomic(&self, owner: &str, writes: Vec<(String, i32, Vec<Record>)>) -> Result<()> {
        let _ = owner;
        for (topic, partition, records) in writes {
            self.append(&topic, partition, records)?;
        }
        Ok(())
    }
}

/// Topics in memory.
#[derive(Default)]
pub struct MemTopics {
    topics: Mutex<BTreeMap<String, Vec<Vec<Record>>>>,
    /// (group, topic, partition) → committed offset.
    offsets: Mutex<BTreeMap<(String, String, i32), i64>>,
}

impl MemTopics {
    pub fn new() -> MemTopics {
        MemTopics::default()
    }

    fn missing(name: &str) -> TopicError {
        TopicError::new(format!("topic {name} does not exist"))
    }
}

impl Topics for MemTopics {
    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(name.to_string()).or_insert_with(|| vec![vec![]; partitions.max(1) as usize]);
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(name);
        Ok(())
    }

    fn partitions(&self, name: &str) -> Option<i32> {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.get(name).map(|p| p.len() as i32)
    }

    fn list_topics(&self) -> Vec<String> {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.keys().cloned().collect()
    }

    fn append(&self, topic: &str, partition: i32, records: Vec<Record>) -> Result<i64> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let parts = t.get_mut(topic).ok_or_else(|| Self::missing(topic))?;
        let p = parts
            .get_mut(partition as usize)
            .ok_or_else(|| TopicError::new(format!("topic {topic} has no partition {partition}")))?;
        let base = p.len() as i64;
        p.extend(records);
        Ok(base)
    }

    fn read(&self, topic: &str, partition: i32, offset: i64, max: usize) -> Result<Vec<Consumed>> {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let parts = t.get(topic).ok_or_else(|| Self::missing(topic))?;
        let Some(p) = parts.get(partition as usize) else {
            return Ok(vec![]);
        };
        let start = offset.max(0) as usize;
        Ok(p.iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(i, r)| Consumed { partition, offset: i as i64, record: r.clone() })
            .collect())
    }

    fn end_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let parts = t.get(topic).ok_or_else(|| Self::missing(topic))?;
        Ok(parts.get(partition as usize).map(|p| p.len() as i64).unwrap_or(0))
    }
}

/// A member of a consumer group (the KIP-848 consumer protocol), as its owner sees itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Member {
    /// Empty until the group coordinator gives one.
    pub id: String,
    /// 0 to join; then the coordinator's.
    pub epoch: i32,
    /// A static member's stable name (KIP-345): joining again with it, as a restarted process
    /// does, takes the member's old place at once instead of after its session times out.
    pub instance_id: Option<String>,
}

/// Consumer groups: committed offsets (where a group's consumers resume) and membership (which
/// partitions each member owns).
pub trait GroupOffsets: Send + Sync {
    /// The group's committed offsets for `topic`, by partition (partitions without a commit are
    /// absent).
    fn committed(&self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>>;

    /// Commits `offsets` (partition, next offset to consume) of `topic` for `group`, durably:
    /// as `member` of the group, or from outside it (`None`; refused while it has members).
    fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)], member: Option<&Member>) -> Result<()>;

    /// One heartbeat of `member` in `group`, subscribed to `topic`: joins when its epoch is 0,
    /// reports the partitions it still `owned`, and updates its id and epoch. Returns the
    /// partitions of `topic` the group assigns it when the answer carries an assignment.
    /// `Ok(None)` from the default: no membership here (one owner takes every partition).
    fn heartbeat(&self, group: &str, topic: &str, member: &mut Member, owned: &[i32]) -> Result<Option<Vec<i32>>> {
        let _ = (group, topic, member, owned);
        Ok(None)
    }

    /// Leaves the group (its partitions go to the other members).
    fn leave(&self, group: &str, member: &Member) -> Result<()> {
        let _ = (group, member);
        Ok(())
    }
}

impl GroupOffsets for MemTopics {
    fn committed(&self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
        let o = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        Ok(o.iter().filter(|((g, t, _), _)| g == group && t == topic).map(|((_, _, p), off)| (*p, *off)).collect())
    }

    fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)], _member: Option<&Member>) -> Result<()> {
        let mut o = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for (p, off) in offsets {
            o.insert((group.to_string(), topic.to_string(), *p), *off);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value_len: usize) -> Record {
        Record { key: None, value: Some(vec![0; value_len].into()), timestamp: 0, headers: vec![] }
    }

    #[test]
    fn split_by_size_keeps_order_and_bounds_each_run() {
        let records: Vec<Record> = [100, 100, 100, 1000, 50, 50].iter().map(|&n| record(n)).collect();
        let runs = split_by_size(&records, 300);
        let lens: Vec<Vec<usize>> =
            runs.iter().map(|r| r.iter().map(|x| x.value.as_ref().unwrap().len()).collect()).collect();
        assert_eq!(lens, [vec![100, 100], vec![100], vec![1000], vec![50, 50]]);
        assert_eq!(runs.concat(), records);
        assert!(split_by_size(&[], 300).is_empty());
    }
}
