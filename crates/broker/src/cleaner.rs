//! Log compaction, the policy half: which records of a compacted topic's sealed segments survive.
//!
//! A record survives if it is the latest one for its key in the cleaned range, unless it is a
//! tombstone (no value) older than `delete.retention.ms`, or data of an aborted transaction.
//! Transaction markers are kept, and so is each producer's last batch (whole), so producer state
//! rebuilt from the log stays right. Batches that lose some records are re-encoded with the same
//! offsets, compression and producer fields; untouched batches are copied byte for byte.
//!
//! The cleaner reads sealed segments without holding the partition; produce and fetch go on.
//! Only the final swap takes the partition's lock.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use freshet_log::batch::BatchHeader;
use freshet_log::CleanPlan;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

/// A compacted topic's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    pub delete_retention_ms: i64,
    pub min_dirty_ratio: f64,
    pub min_lag_ms: i64,
    pub max_lag_ms: i64,
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// When the oldest tombstone kept becomes removable (ms), if any was kept.
    pub tombstones_due_ms: Option<i64>,
}

fn compression_of(h: &BatchHeader) -> Compression {
    match h.compression() {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Decides, then rewrites. `aborted` lists aborted transactions as (producer id, first, last).
pub(crate) fn clean(
    plan: &CleanPlan,
    config: &CompactionConfig,
    aborted: &[(i64, u64, u64)],
    now: i64,
) -> Result<(freshet_log::Cleaned, CleanReport), String> {
    let is_aborted = |pid: i64, offset: i64| {
        aborted.iter().any(|&(p, first, last)| p == pid && offset >= first as i64 && offset <= last as i64)
    };
    // Pass 1: the latest offset of every key, and each producer's last batch.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    let mut last_batch_of: HashMap<i64, i64> = HashMap::new();
    let mut failure = None;
    plan.for_each_batch(|b| {
        let Ok(h) = BatchHeader::parse(b) else { return };
        if h.producer_id >= 0 {
            last_batch_of.insert(h.producer_id, h.base_offset);
        }
        if h.is_control() || (h.is_transactional() && is_aborted(h.producer_id, h.base_offset)) {
            return;
        }
        match RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b)) {
            Ok(set) => {
                for r in set.records {
                    if let Some(k) = r.key {
                        latest.insert(k, r.offset);
                    }
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(format!("a batch could not be decoded: {e}"));
    }
    // Pass 2: rewrite.
    let mut removed = 0u64;
    let mut oldest_tombstone: Option<i64> = None;
    let tombstone_horizon = now.saturating_sub(config.delete_retention_ms);
    let cleaned = plan
        .rewrite(|b| {
            let h = BatchHeader::parse(b).ok()?;
            if h.is_control() || (h.producer_id >= 0 && last_batch_of.get(&h.producer_id) == Some(&h.base_offset)) {
                return Some(Cow::Borrowed(b));
            }
            let aborted_batch = h.is_transactional() && is_aborted(h.producer_id, h.base_offset);
            let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b)).ok()?;
            let total = set.records.len();
            let kept: Vec<_> = set
                .records
                .into_iter()
                .filter(|r| {
                    !aborted_batch
                        && r.key.as_ref().is_some_and(|k| latest.get(k) == Some(&r.offset))
                        && !(r.value.is_none() && r.timestamp < tombstone_horizon)
                })
                .collect();
            removed += (total - kept.len()) as u64;
            for r in kept.iter().filter(|r| r.value.is_none()) {
                oldest_tombstone = Some(oldest_tombstone.map_or(r.timestamp, |t: i64| t.min(r.timestamp)));
            }
            if kept.is_empty() {
                return None;
            }
            if kept.len() == total {
                return Some(Cow::Borrowed(b));
            }
            let mut out = BytesMut::new();
            let options = RecordEncodeOptions { version: 2, compression: compression_of(&h) };
            RecordBatchEncoder::encode(&mut out, kept.iter(), &options).ok()?;
            Some(Cow::Owned(out.to_vec()))
        })
        .map_err(|e| e.to_string())?;
    let report = CleanReport {
        bytes_before: cleaned.bytes_before,
        bytes_after: cleaned.bytes_after,
        records_removed: removed,
        tombstones_due_ms: oldest_tombstone.map(|t| t.saturating_add(config.delete_retention_ms)),
    };
    Ok((cleaned, report))
}

/// Where cleaning may go up to, and whether it is due: segments are eligible while their next
/// segment starts at or below `stable` (no open transaction, not the active segment) and their
/// newest record is older than the compaction lag. Due when dirty bytes (written since the last
/// pass, which reached `cleaned_up_to`) reach the ratio, when the oldest dirty segment is older
/// than the maximum lag, or when tombstones a pass kept have become removable
/// (`tombstones_due_ms`).
pub(crate) fn due(
    segments: &[(u64, u64, i64)],
    stable: u64,
    cleaned_up_to: u64,
    tombstones_due_ms: Option<i64>,
    config: &CompactionConfig,
    now: i64,
) -> Option<u64> {
    let mut up_to = None;
    let (mut total, mut dirty) = (0u64, 0u64);
    let mut oldest_dirty: Option<i64> = None;
    for (i, &(base, size, max_ts)) in segments.iter().enumerate() {
        let Some(&(next, _, _)) = segments.get(i + 1) else { break };
        if next > stable || max_ts > now.saturating_sub(config.min_lag_ms) {
            break;
        }
        total += size;
        if base >= cleaned_up_to {
            dirty += size;
            oldest_dirty = Some(oldest_dirty.map_or(max_ts, |o: i64| o.min(max_ts)));
        }
        up_to = Some(next);
    }
    let up_to = up_to?;
    let ratio_met = total > 0 && dirty as f64 / total as f64 >= config.min_dirty_ratio && dirty > 0;
    let lag_met = oldest_dirty.is_some_and(|t| t < now.saturating_sub(config.max_lag_ms));
    let tombstones_met = tombstones_due_ms.is_some_and(|t| now >= t);
    (ratio_met || lag_met || tombstones_met).then_some(up_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CompactionConfig {
        CompactionConfig { delete_retention_ms: 1000, min_dirty_ratio: 0.5, min_lag_ms: 0, max_lag_ms: i64::MAX }
    }

    #[test]
    fn due_honours_ratio_lag_and_stability() {
        let segs = [(0, 100, 10), (10, 100, 20), (20, 100, 30), (30, 50, 40)];
        // Never cleaned: all dirty; up to the active segment.
        assert_eq!(due(&segs, 100, 0, None, &config(), 1_000), Some(30));
        // An open transaction at 15 keeps the cleaner below the segment holding it.
        assert_eq!(due(&segs, 15, 0, None, &config(), 1_000), Some(10));
        // Cleaned up to 20: one dirty segment of three is below the ratio.
        assert_eq!(due(&segs, 100, 20, None, &config(), 1_000), None);
        // ... unless it is older than the maximum lag,
        assert_eq!(due(&segs, 100, 20, None, &CompactionConfig { max_lag_ms: 500, ..config() }, 1_000), Some(30));
        // or tombstones kept by the last pass can go now.
        assert_eq!(due(&segs, 100, 20, Some(900), &config(), 1_000), Some(30));
        assert_eq!(due(&segs, 100, 20, Some(1_100), &config(), 1_000), None);
        // The minimum lag holds back segments with records too young.
        assert_eq!(due(&segs, 100, 0, None, &CompactionConfig { min_lag_ms: 985, ..config() }, 1_000), Some(10));
        // Only an active segment: nothing to do.
        assert_eq!(due(&segs[3..], 100, 0, None, &config(), 1_000), None);
    }
}
