//! Committed offsets, kept in memory and in the internal topic `__consumer_offsets`.
//!
//! Each commit is a record (key: group, topic, partition; value: offset, leader epoch, commit
//! time, metadata); a deletion is a tombstone (no value). At startup the topic is read from the
//! start and the last record per key wins, which is also what log compaction keeps. A commit is
//! acknowledged only once its record is durable.
//!
//! Memory follows the log's order, not the order in which writers finish waiting for
//! durability: each entry remembers the log offset of the record it came from, and a record
//! only replaces an entry (or a recent deletion) from an earlier offset. So two commits of the
//! same key racing each other leave in memory what a restart would load.
//!
//! Record layout (all integers big-endian):
//! ```text
//! key:   version u8 = 1 | group: u16 len + bytes | topic: u16 len + bytes | partition i32
//! value: version u8 = 1 | offset i64 | leader epoch i32 | commit time i64 | metadata: i32 len (-1 null) + bytes
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use freshet_log::batch::{self, SimpleRecord};
use kafka_protocol::ResponseError;

use crate::broker::now_ms;
use crate::partition::Partition;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

pub type TopicPartition = (String, i32);

pub struct OffsetStore {
    log: Arc<Partition>,
    inner: Mutex<Inner>,
}

/// A committed offset and the log offset of the record that committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    committed: Committed,
    at: u64,
}

/// The in-memory state, applied in log order.
#[derive(Debug, Default)]
struct Inner {
    offsets: HashMap<String, BTreeMap<TopicPartition, Entry>>,
    /// Keys deleted while other writes were in flight, with the log offset of the tombstone: an
    /// older commit finishing late must not bring them back. Emptied when no write is in flight.
    deleted: HashMap<(String, TopicPartition), u64>,
    /// Writes appended (or about to be) and not yet applied.
    in_flight: usize,
}

impl Inner {
    /// Applies the record at log offset `at` for one key: a commit (Some) or a deletion (None).
    /// A record older than what memory already holds for the key is ignored, as it is
    /// overridden in the log too.
    fn apply(&mut self, group: &str, tp: TopicPartition, value: Option<Committed>, at: u64) {
        let key = (group.to_string(), tp);
        let current = self.offsets.get(group).and_then(|g| g.get(&key.1)).map(|e| e.at);
        if current.or_else(|| self.deleted.get(&key).copied()).is_some_and(|newer| newer >= at) {
            return;
        }
        let (group, tp) = key;
        match value {
            Some(committed) => {
                self.deleted.remove(&(group.clone(), tp.clone()));
                self.offsets.entry(group).or_default().insert(tp, Entry { committed, at });
            }
            None => {
                if let Some(g) = self.offsets.get_mut(&group) {
                    g.remove(&tp);
                    if g.is_empty() {
                        self.offsets.remove(&group);
                    }
                }
                if self.in_flight > 0 {
                    self.deleted.insert((group, tp), at);
                }
            }
        }
    }
}

/// Counts a write as in flight until it is applied (or abandoned).
struct InFlight<'a>(&'a Mutex<Inner>);

impl<'a> InFlight<'a> {
    fn start(inner: &'a Mutex<Inner>) -> Self {
        inner.lock().unwrap_or_else(|p| p.into_inner()).in_flight += 1;
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.in_flight -= 1;
        if inner.in_flight == 0 {
            inner.deleted.clear();
        }
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![1u8];
    put_str16(&mut k, group);
    put_str16(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    v.extend_from_slice(&c.commit_timestamp.to_be_bytes());
    match &c.metadata {
        Some(m) => {
            v.extend_from_slice(&(m.len() as i32).to_be_bytes());
            v.extend_from_slice(m.as_bytes());
        }
        None => v.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    v
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (buf.get(..n)?, buf.get(n..)?);
    *buf = rest;
    Some(head)
}

fn take_str16(buf: &mut &[u8]) -> Option<String> {
    let len = u16::from_be_bytes(take(buf, 2)?.try_into().ok()?) as usize;
    String::from_utf8(take(buf, len)?.to_vec()).ok()
}

fn decode_key(mut k: &[u8]) -> Option<(String, String, i32)> {
    if take(&mut k, 1)? != [1] {
        return None;
    }
    let group = take_str16(&mut k)?;
    let topic = take_str16(&mut k)?;
    let partition = i32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?);
    Some((group, topic, partition))
}

fn decode_value(mut v: &[u8]) -> Option<Committed> {
    if take(&mut v, 1)? != [1] {
        return None;
    }
    let offset = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    let leader_epoch = i32::from_be_bytes(take(&mut v, 4)?.try_into().ok()?);
    let commit_timestamp = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    let len = i32::from_be_bytes(take(&mut v, 4)?.try_into().ok()?);
    let metadata = if len < 0 { None } else { Some(String::from_utf8(take(&mut v, len as usize)?.to_vec()).ok()?) };
    Some(Committed { offset, leader_epoch, metadata, commit_timestamp })
}

impl OffsetStore {
    /// Loads every committed offset from the internal topic's partition.
    pub fn load(log: Arc<Partition>) -> Result<OffsetStore, String> {
        let mut inner = Inner::default();
        let (start, end) = log.offsets().map_err(|e| format!("{e:?}"))?;
        let mut at = start;
        let mut loaded = 0usize;
        while at < end {
            let out = log.read(at, 4 << 20, true, false).map_err(|e| format!("reading committed offsets: {e:?}"))?;
            if out.records.is_empty() {
                break;
            }
            let mut rest = &out.records[..];
            while let Some(size) = batch::peek_size(rest).filter(|s| *s <= rest.len()) {
                let one = &rest[..size];
                rest = &rest[size..];
                let header = batch::BatchHeader::parse(one).map_err(|e| e.to_string())?;
                at = header.next_offset() as u64;
                for r in batch::records(one).ok_or("an offsets batch is compressed or malformed")? {
                    let Some((group, topic, partition)) = r.key.and_then(decode_key) else { continue };
                    inner.apply(&group, (topic, partition), r.value.and_then(decode_value), r.offset as u64);
                    loaded += 1;
                }
            }
        }
        tracing::info!(groups = inner.offsets.len(), records = loaded, "loaded committed offsets");
        Ok(OffsetStore { log, inner: Mutex::new(inner) })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes records to the internal topic and waits until they are durable; returns the log
    /// offset of the first (the others follow it).
    async fn write(&self, records: Vec<SimpleRecord>) -> Result<u64, ResponseError> {
        let bytes = batch::encode_batch(&records);
        let header = batch::validate(&bytes).map_err(|_| ResponseError::UnknownServerError)?;
        let appended = self
            .log
            .append(BytesMut::from(&bytes[..]), header, now_ms())
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?
            .map_err(|(code, _)| code)?;
        if appended.needs_sync {
            self.log.wait_durable(appended.info.last_offset + 1, Duration::from_secs(30)).await?;
        }
        Ok(appended.info.base_offset)
    }

    /// Commits offsets for a group; visible once durable.
    pub async fn commit(&self, group: &str, entries: Vec<(TopicPartition, Committed)>) -> Result<(), ResponseError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let records = entries
            .iter()
            .map(|((t, p), c)| SimpleRecord {
                timestamp: now,
                key: Some(encode_key(group, t, *p).into()),
                value: Some(encode_value(c).into()),
                headers: vec![],
            })
            .collect();
        let _in_flight = InFlight::start(&self.inner);
        let first = self.write(records).await?;
        let mut inner = self.inner();
        for (i, (tp, c)) in entries.into_iter().enumerate() {
            inner.apply(group, tp, Some(c), first + i as u64);
        }
        Ok(())
    }

    /// Deletes offsets (all of a group's when `partitions` is None).
    pub async fn delete(&self, group: &str, partitions: Option<Vec<TopicPartition>>) -> Result<usize, ResponseError> {
        let keys: Vec<TopicPartition> = {
            let inner = self.inner();
            let Some(g) = inner.offsets.get(group) else { return Ok(0) };
            match partitions {
                None => g.keys().cloned().collect(),
                Some(list) => list.into_iter().filter(|tp| g.contains_key(tp)).collect(),
            }
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let records = keys
            .iter()
            .map(|(t, p)| SimpleRecord {
                timestamp: now,
                key: Some(encode_key(group, t, *p).into()),
                value: None,
                headers: vec![],
            })
            .collect();
        let _in_flight = InFlight::start(&self.inner);
        let first = self.write(records).await?;
        let mut inner = self.inner();
        for (i, tp) in keys.iter().enumerate() {
            inner.apply(group, tp.clone(), None, first + i as u64);
        }
        Ok(keys.len())
    }

    /// A group's committed offsets.
    pub fn fetch(&self, group: &str) -> BTreeMap<TopicPartition, Committed> {
        self.inner()
            .offsets
            .get(group)
            .map(|g| g.iter().map(|(tp, e)| (tp.clone(), e.committed.clone())).collect())
            .unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.inner().offsets.keys().cloned().collect()
    }

    /// Whether a group has committed offsets.
    pub fn has_offsets(&self, group: &str) -> bool {
        self.inner().offsets.get(group).is_some_and(|g| !g.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let c = Committed { offset: 42, leader_epoch: 3, metadata: Some("m".into()), commit_timestamp: 7 };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        let c = Committed { offset: -1, leader_epoch: -1, metadata: None, commit_timestamp: 0 };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        assert_eq!(decode_key(&encode_key("g", "t", 5)), Some(("g".into(), "t".into(), 5)));
        assert_eq!(decode_key(&[2, 0]), None);
        assert_eq!(decode_value(&[1, 0, 0]), None);
    }

    fn committed(offset: i64) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: None, commit_timestamp: 0 }
    }

    fn get(inner: &Inner, group: &str) -> Option<i64> {
        inner.offsets.get(group).and_then(|g| g.get(&("t".to_string(), 0))).map(|e| e.committed.offset)
    }

    /// Two commits of one key whose writers finish out of log order: memory keeps the later
    /// record, as loading the log would.
    #[test]
    fn memory_follows_log_order_not_completion_order() {
        let tp = || ("t".to_string(), 0);
        let mut inner = Inner { in_flight: 2, ..Inner::default() };
        inner.apply("g", tp(), Some(committed(200)), 11);
        inner.apply("g", tp(), Some(committed(100)), 10);
        assert_eq!(get(&inner, "g"), Some(200));

        // A deletion at 12 applied before a commit at 11 that finishes late: stays deleted.
        inner.apply("g", tp(), None, 12);
        inner.apply("g", tp(), Some(committed(300)), 11);
        assert_eq!(get(&inner, "g"), None);
        // A commit after the deletion in the log brings the key back.
        inner.apply("g", tp(), Some(committed(400)), 13);
        assert_eq!(get(&inner, "g"), Some(400));
        // In order, each record replaces the one before.
        inner.apply("g", tp(), Some(committed(500)), 14);
        assert_eq!(get(&inner, "g"), Some(500));
    }

    /// Concurrent commits of the same key leave memory as a restart loads it from the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_agree_with_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let fs: Arc<dyn freshet_log::fs::Fs> = Arc::new(freshet_log::fs::StdFs);
        let dir = tmp.path().join("0");
        let open =
            || Arc::new(Partition::open(fs.clone(), &dir, "__consumer_offsets", 0, freshet_log::LogConfig::default()));
        let store = Arc::new(OffsetStore::load(open()).unwrap());
        for round in 0..20i64 {
            let commits = (0..8i64).map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.commit("g", vec![(("t".to_string(), 0), committed(round * 100 + i))]).await.unwrap();
                })
            });
            for c in commits.collect::<Vec<_>>() {
                c.await.unwrap();
            }
            let in_memory = store.fetch("g");
            let reloaded = OffsetStore::load(store.log.clone()).unwrap().fetch("g");
            assert_eq!(in_memory, reloaded, "round {round}");
        }
        assert!(store.inner().deleted.is_empty());
        assert_eq!(store.inner().in_flight, 0);
    }
}
