//! Log compaction, the policy half: which records of a compacted topic's sealed segments survive.
//!
//! A record survives if it is the latest one for its key in the cleaned range, unless it is a
//! tombstone (no value) older than `delete.retention.ms`, or data of an aborted transaction.
//! Transaction markers are kept, and so is each producer's last batch (whole), so producer state
//! rebuilt from the log stays right. Batches that lose some records are re-encoded with the same
//! offsets, compression, producer fields and timestamp type (a LogAppendTime batch keeps its
//! broker-set max timestamp); untouched batches are copied byte for byte. A batch that cannot be
//! decoded or re-encoded fails the pass: the old segments stay, nothing is dropped by accident.
//!
//! The cleaner reads sealed segments without holding the partition; produce and fetch go on.
//! Only the final swap takes the partition's lock.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use freshet_log::batch::BatchHeader;
use freshet_log::CleanPlan;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

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
///
/// Any batch that cannot be parsed, decoded or re-encoded fails the whole pass (the old segments
/// stay as they are): a record is only ever removed because the policy decided so.
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
        if failure.is_some() {
            return;
        }
        let h = match BatchHeader::parse(b) {
            Ok(h) => h,
            Err(e) => {
                failure = Some(format!("a batch header could not be parsed: {e}"));
                return;
            }
        };
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
            Err(e) => failure = Some(format!("the batch at offset {} could not be decoded: {e}", h.base_offset)),
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(e);
    }
    // Pass 2: rewrite.
    let mut policy = Keep {
        latest: &latest,
        last_batch_of: &last_batch_of,
        is_aborted: &is_aborted,
        tombstone_horizon: now.saturating_sub(config.delete_retention_ms),
        removed: 0,
        oldest_tombstone: None,
    };
    let cleaned = plan.rewrite(|b| policy.batch(b)).map_err(|e| e.to_string())?;
    let report = CleanReport {
        bytes_before: cleaned.bytes_before,
        bytes_after: cleaned.bytes_after,
        records_removed: policy.removed,
        tombstones_due_ms: policy.oldest_tombstone.map(|t| t.saturating_add(config.delete_retention_ms)),
    };
    Ok((cleaned, report))
}

/// The decision for each batch of pass 2, with what pass 1 learned.
struct Keep<'p> {
    /// The latest offset of every key in the cleaned range.
    latest: &'p HashMap<Bytes, i64>,
    /// Each producer's last batch (its base offset).
    last_batch_of: &'p HashMap<i64, i64>,
    is_aborted: &'p dyn Fn(i64, i64) -> bool,
    /// Tombstones older than this go.
    tombstone_horizon: i64,
    removed: u64,
    oldest_tombstone: Option<i64>,
}

impl Keep<'_> {
    /// What to write in place of batch `b`: itself, a smaller batch, or nothing. An error (a batch
    /// that cannot be parsed, decoded or re-encoded) fails the pass rather than drop the batch.
    fn batch<'b>(&mut self, b: &'b [u8]) -> Result<Option<Cow<'b, [u8]>>, String> {
        let h = BatchHeader::parse(b).map_err(|e| format!("a batch header could not be parsed: {e}"))?;
        if h.is_control() || (h.producer_id >= 0 && self.last_batch_of.get(&h.producer_id) == Some(&h.base_offset)) {
            return Ok(Some(Cow::Borrowed(b)));
        }
        if h.is_transactional() && (self.is_aborted)(h.producer_id, h.base_offset) {
            // Aborted data goes whole; no need to look inside.
            self.removed += h.records_count.max(0) as u64;
            return Ok(None);
        }
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b))
            .map_err(|e| format!("the batch at offset {} could not be decoded: {e}", h.base_offset))?;
        // With LogAppendTime a record's time is the broker's, in the batch header.
        let time_of = |r: &Record| if h.is_log_append_time() { h.max_timestamp } else { r.timestamp };
        let total = set.records.len();
        let kept: Vec<_> = set
            .records
            .into_iter()
            .filter(|r| {
                r.key.as_ref().is_some_and(|k| self.latest.get(k) == Some(&r.offset))
                    && !(r.value.is_none() && time_of(r) < self.tombstone_horizon)
            })
            .collect();
        self.removed += (total - kept.len()) as u64;
        for r in kept.iter().filter(|r| r.value.is_none()) {
            let t = time_of(r);
            self.oldest_tombstone = Some(self.oldest_tombstone.map_or(t, |o| o.min(t)));
        }
        if kept.is_empty() {
            return Ok(None);
        }
        if kept.len() == total {
            return Ok(Some(Cow::Borrowed(b)));
        }
        reencode(&h, &kept).map(|out| Some(Cow::Owned(out)))
    }
}

/// Encodes the records kept of the batch `h` heads as one batch with the same compression and
/// producer fields; a LogAppendTime batch keeps its timestamp type and broker-set max timestamp.
fn reencode(h: &BatchHeader, kept: &[Record]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: compression_of(h) };
    RecordBatchEncoder::encode(&mut out, kept.iter(), &options)
        .map_err(|e| format!("the batch at offset {} could not be re-encoded: {e}", h.base_offset))?;
    let mut out = out.to_vec();
    if freshet_log::batch::peek_size(&out) != Some(out.len()) {
        return Err(format!("the records kept of the batch at offset {} did not encode as one batch", h.base_offset));
    }
    if h.is_log_append_time() {
        // The encoder knows only CreateTime; stamp the broker's time back (this recomputes the CRC).
        freshet_log::batch::set_log_append_time(&mut out, h.max_timestamp);
    }
    Ok(out)
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
    use freshet_log::batch::{self, SimpleRecord};
    use freshet_log::{Log, LogConfig};
    use std::path::Path;
    use std::sync::Arc;

    const NOW: i64 = 1_700_000_000_000;

    fn keyed(pairs: &[(&str, &str)], timestamp: i64) -> Vec<u8> {
        let records: Vec<SimpleRecord> = pairs
            .iter()
            .map(|(k, v)| SimpleRecord {
                timestamp,
                key: Some(k.as_bytes().to_vec().into()),
                value: Some(v.as_bytes().to_vec().into()),
                headers: vec![],
            })
            .collect();
        batch::encode_batch(&records)
    }

    fn append(log: &mut Log, mut b: Vec<u8>, now: i64) {
        let h = batch::validate(&b).unwrap();
        log.append(&mut b, &h, now).unwrap();
    }

    /// A LogAppendTime batch that loses records keeps its timestamp type and the broker's
    /// timestamp (the records' own timestamps are the producer's).
    #[test]
    fn a_reencoded_log_append_time_batch_keeps_its_timestamp_type() {
        let fs = freshet_log::sim::SimFs::new();
        let config = LogConfig { log_append_time: true, ..LogConfig::default() };
        let (mut log, _) = Log::open(Arc::new(fs), Path::new("/p"), config, NOW).unwrap();
        append(&mut log, keyed(&[("k1", "old"), ("k2", "kept")], 1_000), NOW);
        append(&mut log, keyed(&[("k1", "new")], 2_000), NOW + 5);
        log.roll(NOW + 10).unwrap();
        append(&mut log, keyed(&[("k3", "active")], 3_000), NOW + 20);
        let plan = log.plan_clean(3).expect("one sealed segment");
        let (cleaned, report) = clean(&plan, &config_for_test(), &[], NOW + 30).unwrap();
        assert_eq!(report.records_removed, 1);
        assert!(log.swap_cleaned(cleaned, NOW + 30).unwrap());
        let freshet_log::ReadChunk::Data { bytes, .. } = log.read(0, 1 << 20, true).unwrap() else { panic!() };
        let size = batch::peek_size(&bytes).unwrap();
        let first = &bytes[..size];
        let h = batch::validate(first).expect("a valid batch (CRC recomputed)");
        assert!(h.is_log_append_time(), "the timestamp type survives the re-encoding");
        assert_eq!(h.max_timestamp, NOW, "the broker-set max timestamp survives");
        assert_eq!(h.base_offset, 1);
        let records = batch::records(first).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, Some(&b"k2"[..]));
    }

    fn config_for_test() -> CompactionConfig {
        CompactionConfig { delete_retention_ms: 1000, min_dirty_ratio: 0.5, min_lag_ms: 0, max_lag_ms: i64::MAX }
    }

    /// A batch that cannot be decoded is an error, never a batch to drop.
    #[test]
    fn an_undecodable_batch_fails_the_pass_instead_of_being_dropped() {
        // A zstd batch whose payload is not zstd, with a valid CRC.
        let mut b = keyed(&[("k", "v")], 1_000);
        b[21..23].copy_from_slice(&4i16.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let (latest, last_batch_of) = (HashMap::new(), HashMap::new());
        let mut keep = Keep {
            latest: &latest,
            last_batch_of: &last_batch_of,
            is_aborted: &|_, _| false,
            tombstone_horizon: 0,
            removed: 0,
            oldest_tombstone: None,
        };
        let err = keep.batch(&b).expect_err("an error, not Ok(None)");
        assert!(err.contains("could not be decoded"), "{err}");
        assert_eq!(keep.removed, 0);
    }

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
