//! Sparse indexes of one segment, kept in memory and mirrored to files.
//!
//! - Offset index (`.index`): 8-byte entries (offset relative to the segment base: u32, byte
//!   position of the batch starting at that offset: u32), one every `index.interval.bytes` of log.
//! - Time index (`.timeindex`): 12-byte entries (timestamp: i64, relative offset: u32) meaning
//!   "the largest timestamp of the batches up to and including the batch at this offset".
//!
//! All integers are big-endian. Entries are written to the files only once the log data they
//! point at is durable, so an index entry read back after a crash always points at intact data;
//! a torn or missing tail of an index file only means recovery scans a little more.

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;

#[derive(Debug, Default, Clone)]
pub(crate) struct Indexes {
    /// (relative offset, position); strictly increasing in both.
    pub offsets: Vec<(u32, u32)>,
    /// (timestamp, relative offset); strictly increasing timestamps.
    pub times: Vec<(i64, u32)>,
    /// How many entries of each are already in the files.
    pub persisted_offsets: usize,
    pub persisted_times: usize,
    /// Log bytes appended since the last offset index entry.
    pub bytes_since_entry: u64,
}

impl Indexes {
    /// The entry with the greatest relative offset not above `rel`, or the segment start.
    pub fn floor(&self, rel: u32) -> (u32, u32) {
        let i = self.offsets.partition_point(|&(o, _)| o <= rel);
        if i == 0 {
            (0, 0)
        } else {
            self.offsets[i - 1]
        }
    }

    /// The last time entry with a timestamp below `ts` (every batch up to it is older than `ts`).
    pub fn last_time_before(&self, ts: i64) -> Option<(i64, u32)> {
        let i = self.times.partition_point(|&(t, _)| t < ts);
        (i > 0).then(|| self.times[i - 1])
    }

    /// Records a batch of `size` bytes at `pos` with relative offset `rel`; `max_ts_so_far` is
    /// the segment's largest timestamp including this batch.
    ///
    /// A batch that already has its entry (recovery rescans from the last indexed batch) adds
    /// none: with `index.interval.bytes` 0 it would otherwise be indexed twice.
    pub fn on_append(&mut self, rel: u32, pos: u32, size: u64, interval: u64, max_ts_so_far: i64) {
        let indexed = self.offsets.last().is_some_and(|&(o, _)| o >= rel);
        if pos > 0 && self.bytes_since_entry >= interval && !indexed {
            debug_assert!(self.offsets.last().is_none_or(|&(o, p)| o < rel && p < pos));
            self.offsets.push((rel, pos));
            self.bytes_since_entry = 0;
            self.push_time(max_ts_so_far, rel);
        }
        self.bytes_since_entry += size;
    }

    /// Adds a time entry if `ts` is larger than the last one.
    pub fn push_time(&mut self, ts: i64, rel: u32) {
        if self.times.last().is_none_or(|&(t, _)| ts > t) {
            self.times.push((ts, rel));
        }
    }

    pub fn encode_offsets(entries: &[(u32, u32)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY);
        for &(rel, pos) in entries {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub fn encode_times(entries: &[(i64, u32)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY);
        for &(ts, rel) in entries {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Decodes an offset index file, keeping the longest prefix of entries that is strictly
    /// increasing, positive and inside a segment of `segment_size` bytes. The bool says whether
    /// the whole file was valid.
    pub fn decode_offsets(bytes: &[u8], segment_size: u64) -> (Vec<(u32, u32)>, bool) {
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY);
        for chunk in bytes.chunks(OFFSET_ENTRY) {
            if chunk.len() < OFFSET_ENTRY {
                return (out, false);
            }
            let rel = u32::from_be_bytes(chunk[0..4].try_into().expect("4 bytes"));
            let pos = u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes"));
            let ok = pos > 0 && (pos as u64) < segment_size && out.last().is_none_or(|&(o, p)| rel > o && pos > p);
            if !ok {
                return (out, false);
            }
            out.push((rel, pos));
        }
        (out, true)
    }

    /// Decodes a time index file, keeping the longest prefix with strictly increasing timestamps
    /// and non-decreasing offsets not above `max_rel`.
    pub fn decode_times(bytes: &[u8], max_rel: u32) -> (Vec<(i64, u32)>, bool) {
        let mut out: Vec<(i64, u32)> = Vec::with_capacity(bytes.len() / TIME_ENTRY);
        for chunk in bytes.chunks(TIME_ENTRY) {
            if chunk.len() < TIME_ENTRY {
                return (out, false);
            }
            let ts = i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes"));
            let rel = u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes"));
            let ok = rel <= max_rel && out.last().is_none_or(|&(t, o)| ts > t && rel >= o);
            if !ok {
                return (out, false);
            }
            out.push((ts, rel));
        }
        (out, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_seen_again_by_recovery_is_not_indexed_twice() {
        let mut ix = Indexes::default();
        // index.interval.bytes 0: every batch past the first gets an entry.
        ix.on_append(0, 0, 100, 0, 10);
        ix.on_append(2, 100, 100, 0, 20);
        // Recovery rescans from the last indexed batch.
        ix.on_append(2, 100, 100, 0, 20);
        ix.on_append(4, 200, 100, 0, 30);
        assert_eq!(ix.offsets, vec![(2, 100), (4, 200)]);
    }

    #[test]
    fn floor_and_time_lookup() {
        let mut ix = Indexes::default();
        // batches of 100 bytes, interval 250: entries land every third batch
        let mut pos = 0u32;
        for rel in 0..10u32 {
            ix.on_append(rel, pos, 100, 250, 1_000 + rel as i64 * 10);
            pos += 100;
        }
        assert_eq!(ix.offsets, vec![(3, 300), (6, 600), (9, 900)]);
        assert_eq!(ix.floor(0), (0, 0));
        assert_eq!(ix.floor(5), (3, 300));
        assert_eq!(ix.floor(9), (9, 900));
        assert_eq!(ix.times, vec![(1_030, 3), (1_060, 6), (1_090, 9)]);
        assert_eq!(ix.last_time_before(1_030), None);
        assert_eq!(ix.last_time_before(1_031), Some((1_030, 3)));
    }

    #[test]
    fn decode_keeps_valid_prefix() {
        let entries = vec![(3, 300), (6, 600), (9, 900)];
        let mut bytes = Indexes::encode_offsets(&entries);
        assert_eq!(Indexes::decode_offsets(&bytes, 1000), (entries.clone(), true));
        // a zero-filled hole, as an out-of-order writeback leaves it
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&Indexes::encode_offsets(&[(12, 960)]));
        assert_eq!(Indexes::decode_offsets(&bytes, 1000), (entries.clone(), false));
        // torn last entry
        let bytes = Indexes::encode_offsets(&entries);
        assert_eq!(Indexes::decode_offsets(&bytes[..20], 1000), (entries[..2].to_vec(), false));
        // entry past the end of a truncated segment
        assert_eq!(Indexes::decode_offsets(&Indexes::encode_offsets(&entries), 700), (entries[..2].to_vec(), false));
        let times = vec![(5, 0), (9, 4)];
        assert_eq!(Indexes::decode_times(&Indexes::encode_times(&times), 4), (times.clone(), true));
        assert_eq!(Indexes::decode_times(&Indexes::encode_times(&times), 3), (times[..1].to_vec(), false));
    }
}
