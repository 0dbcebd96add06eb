//! Per-partition producer state: what makes producers idempotent and transactions visible
//! (Kafka's ProducerStateManager).
//!
//! For each producer id the partition keeps its epoch, the sequence numbers and offsets of its
//! last five batches (a retried batch is recognized and answered with its original offset
//! instead of being written twice), and the first offset of its open transaction (the last
//! stable offset stops there). Aborted transactions are remembered so read_committed consumers
//! can skip their records.
//!
//! The state is rebuilt from the log at startup: from a snapshot written at clean shutdown and
//! periodically (`producer-state` in the partition directory), then by replaying the batches
//! after it.

use std::collections::{HashMap, VecDeque};

use freshet_log::BatchHeader;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

/// Batches per producer whose sequence numbers are remembered (Kafka's max in-flight requests
/// for idempotent producers).
pub const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction in this partition.
    pub txn_first_offset: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    /// Offset of the abort marker.
    pub last_offset: u64,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Not an idempotent batch, or the next one in sequence: append it.
    Append,
    /// A retry of a batch already written at this offset: answer with it, write nothing.
    Duplicate(BatchMeta),
    /// Refuse it.
    Refuse(ResponseError, String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub producers: HashMap<i64, ProducerEntry>,
    /// Aborted transactions, in marker order.
    pub aborted: Vec<AbortedTxn>,
    /// The state reflects the log below this offset.
    pub end_offset: u64,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerState {
    /// Checks a producer's batch against its sequence and epoch.
    pub fn check(&self, h: &BatchHeader) -> Check {
        if h.producer_id < 0 {
            if h.is_transactional() {
                return Check::Refuse(ResponseError::InvalidRecord, "a transactional batch needs a producer id".into());
            }
            return Check::Append;
        }
        let first = h.base_sequence;
        let last = if first < 0 {
            first
        } else {
            ((first as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
        };
        let Some(entry) = self.producers.get(&h.producer_id) else {
            if first > 0 {
                return Check::Refuse(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!("producer {} starts at sequence {first}, not 0", h.producer_id),
                );
            }
            return Check::Append;
        };
        if h.producer_epoch < entry.epoch {
            let code =
                if h.is_transactional() { ResponseError::ProducerFenced } else { ResponseError::InvalidProducerEpoch };
            return Check::Refuse(code, format!("producer epoch {} is older than {}", h.producer_epoch, entry.epoch));
        }
        if h.producer_epoch > entry.epoch || first < 0 {
            // A new epoch starts its sequence again at 0.
            if first > 0 {
                return Check::Refuse(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!("a new epoch of producer {} starts at sequence {first}, not 0", h.producer_id),
                );
            }
            return Check::Append;
        }
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Check::Duplicate(*b);
        }
        match entry.batches.back() {
            Some(b) if next_seq(b.last_seq) != first => Check::Refuse(
                ResponseError::OutOfOrderSequenceNumber,
                format!("producer {} sent sequence {first}; {} was expected", h.producer_id, next_seq(b.last_seq)),
            ),
            _ => Check::Append,
        }
    }

    /// Records a data batch written at `base_offset` (the header's own base offset may be 0).
    pub fn on_batch(&mut self, h: &BatchHeader, base_offset: u64) {
        let last_offset = base_offset + h.last_offset_delta as u64;
        self.end_offset = self.end_offset.max(last_offset + 1);
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if h.base_sequence >= 0 {
            let last_seq = ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32;
            entry.batches.push_back(BatchMeta { first_seq: h.base_sequence, last_seq, base_offset, last_offset });
            while entry.batches.len() > REMEMBERED_BATCHES {
                entry.batches.pop_front();
            }
        }
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
        }
    }

    /// Records a transaction marker (commit or abort) written at `offset`.
    pub fn on_marker(&mut self, producer_id: i64, epoch: i16, commit: bool, offset: u64) {
        self.end_offset = self.end_offset.max(offset + 1);
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if let Some(first) = entry.txn_first_offset.take() {
            if !commit {
                self.aborted.push(AbortedTxn { producer_id, first_offset: first, last_offset: offset });
            }
        }
    }

    /// The first offset of any open transaction: the last stable offset can be no higher.
    pub fn first_unstable_offset(&self) -> Option<u64> {
        self.producers.values().filter_map(|e| e.txn_first_offset).min()
    }

    /// Aborted transactions whose records may be in `[from, to)`, as (producer id, first offset).
    pub fn aborted_between(&self, from: u64, to: u64) -> Vec<(i64, u64)> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Forgets what lies wholly below the log start.
    pub fn truncate_below(&mut self, log_start: u64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
        self.producers
            .retain(|_, e| e.txn_first_offset.is_some() || e.batches.back().is_none_or(|b| b.last_offset >= log_start));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<ProducerState> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The control record key of a transaction marker: version 0, type 0 (abort) or 1 (commit).
pub fn marker_key(commit: bool) -> Vec<u8> {
    let mut k = 0i16.to_be_bytes().to_vec();
    k.extend_from_slice(&(commit as i16).to_be_bytes());
    k
}

/// Reads a marker's type from its control record key: Some(true) for commit.
pub fn marker_is_commit(key: &[u8]) -> Option<bool> {
    let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    match kind {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: if txn { freshet_log::batch::TRANSACTIONAL } else { 0 },
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn sequences_duplicates_and_gaps() {
        let mut s = ProducerState::default();
        let b0 = header(7, 0, 0, 3, false);
        assert_eq!(s.check(&b0), Check::Append);
        s.on_batch(&b0, 100);
        // The same batch again is a duplicate, answered with its offset.
        assert!(matches!(s.check(&b0), Check::Duplicate(BatchMeta { base_offset: 100, last_offset: 102, .. })));
        let b1 = header(7, 0, 3, 2, false);
        assert_eq!(s.check(&b1), Check::Append);
        s.on_batch(&b1, 103);
        // A gap.
        assert!(matches!(
            s.check(&header(7, 0, 9, 1, false)),
            Check::Refuse(ResponseError::OutOfOrderSequenceNumber, _)
        ));
        // An old epoch is fenced; a new epoch starts at 0.
        s.on_batch(&header(7, 1, 0, 1, false), 105);
        assert!(matches!(s.check(&header(7, 0, 5, 1, false)), Check::Refuse(ResponseError::InvalidProducerEpoch, _)));
        assert!(matches!(
            s.check(&header(7, 2, 4, 1, false)),
            Check::Refuse(ResponseError::OutOfOrderSequenceNumber, _)
        ));
        assert_eq!(s.check(&header(7, 2, 0, 1, false)), Check::Append);
        // Unknown producers start at 0.
        assert!(matches!(
            s.check(&header(8, 0, 3, 1, false)),
            Check::Refuse(ResponseError::OutOfOrderSequenceNumber, _)
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::default();
        for i in 0..8 {
            s.on_batch(&header(1, 0, i, 1, false), i as u64);
        }
        assert_eq!(s.producers[&1].batches.len(), REMEMBERED_BATCHES);
        assert!(matches!(s.check(&header(1, 0, 7, 1, false)), Check::Duplicate(_)));
        assert!(matches!(s.check(&header(1, 0, 1, 1, false)), Check::Refuse(..)));
    }

    #[test]
    fn transactions_bound_the_stable_offset_and_aborts_are_remembered() {
        let mut s = ProducerState::default();
        s.on_batch(&header(1, 0, 0, 2, true), 10);
        s.on_batch(&header(2, 0, 0, 1, true), 12);
        s.on_batch(&header(1, 0, 2, 1, true), 13);
        assert_eq!(s.first_unstable_offset(), Some(10));
        s.on_marker(1, 0, false, 14);
        assert_eq!(s.first_unstable_offset(), Some(12));
        s.on_marker(2, 0, true, 15);
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(s.aborted_between(0, 100), vec![(1, 10)]);
        assert_eq!(s.aborted_between(15, 100), vec![]);
        let bytes = s.to_bytes();
        assert_eq!(ProducerState::from_bytes(&bytes), Some(s));
        assert_eq!(marker_is_commit(&marker_key(true)), Some(true));
        assert_eq!(marker_is_commit(&marker_key(false)), Some(false));
    }
}
