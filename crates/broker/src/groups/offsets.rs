//! Committed offsets, kept in memory and in the internal topic `__consumer_offsets`.
//!
//! Each commit is a record (key: group, topic, partition; value: offset, leader epoch, commit
//! time, metadata); a deletion is a tombstone (no value). At startup the topic is read from the
//! start and the last record per key wins, which is also what log compaction keeps. A commit is
//! acknowledged only once its record is durable.
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
    offsets: Mutex<HashMap<String, BTreeMap<TopicPartition, Committed>>>,
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
        let mut offsets: HashMap<String, BTreeMap<TopicPartition, Committed>> = HashMap::new();
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
                    let entry = offsets.entry(group).or_default();
                    match r.value.and_then(decode_value) {
                        Some(c) => entry.insert((topic, partition), c),
                        None => entry.remove(&(topic, partition)),
                    };
                    loaded += 1;
                }
            }
        }
        offsets.retain(|_, m| !m.is_empty());
        tracing::info!(groups = offsets.len(), records = loaded, "loaded committed offsets");
        Ok(OffsetStore { log, offsets: Mutex::new(offsets) })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<TopicPartition, Committed>>> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes records to the internal topic and waits until they are durable.
    async fn write(&self, records: Vec<SimpleRecord>) -> Result<(), ResponseError> {
        if records.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }

    /// Commits offsets for a group; visible once durable.
    pub async fn commit(&self, group: &str, entries: Vec<(TopicPartition, Committed)>) -> Result<(), ResponseError> {
        let now = now_ms();
        let records = entries
            .iter()
            .map(|((t, p), c)| SimpleRecord {
                timestamp: now,
                key: Some(encode_key(group, t, *p)),
                value: Some(encode_value(c)),
                headers: vec![],
            })
            .collect();
        self.write(records).await?;
        let mut map = self.map();
        let group_map = map.entry(group.to_string()).or_default();
        for (tp, c) in entries {
            group_map.insert(tp, c);
        }
        Ok(())
    }

    /// Deletes offsets (all of a group's when `partitions` is None).
    pub async fn delete(&self, group: &str, partitions: Option<Vec<TopicPartition>>) -> Result<usize, ResponseError> {
        let keys: Vec<TopicPartition> = {
            let map = self.map();
            let Some(g) = map.get(group) else { return Ok(0) };
            match partitions {
                None => g.keys().cloned().collect(),
                Some(list) => list.into_iter().filter(|tp| g.contains_key(tp)).collect(),
            }
        };
        let now = now_ms();
        let records = keys
            .iter()
            .map(|(t, p)| SimpleRecord {
                timestamp: now,
                key: Some(encode_key(group, t, *p)),
                value: None,
                headers: vec![],
            })
            .collect();
        self.write(records).await?;
        let mut map = self.map();
        if let Some(g) = map.get_mut(group) {
            for k in &keys {
                g.remove(k);
            }
            if g.is_empty() {
                map.remove(group);
            }
        }
        Ok(keys.len())
    }

    /// A group's committed offsets.
    pub fn fetch(&self, group: &str) -> BTreeMap<TopicPartition, Committed> {
        self.map().get(group).cloned().unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// Whether a group has committed offsets.
    pub fn has_offsets(&self, group: &str) -> bool {
        self.map().get(group).is_some_and(|g| !g.is_empty())
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
}
