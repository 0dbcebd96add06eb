//! [`Log`]: one partition's sequence of segments, with append, read, durability, roll,
//! retention and recovery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::error::{IoContext, LogError, Result};
use crate::fs::{self, File, Fs};
use crate::segment::{self, BatchInfo, Segment};

/// Name of the file holding a log start offset that DeleteRecords moved inside a segment.
const LOG_START_FILE: &str = "log-start-offset";

/// Per-partition settings, resolved from the topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1: keep for ever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    /// Whether `retention.ms` / `retention.bytes` delete segments (`cleanup.policy` has delete).
    pub retention_enabled: bool,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    /// Stamp batches with the broker clock (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// 1: every write is fsynced before it is acknowledged (acks=all) or readable.
    pub flush_messages: u64,
    pub flush_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_enabled: true,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            flush_messages: 1,
            flush_ms: i64::MAX,
        }
    }
}

impl LogConfig {
    /// Whether writes become readable and acknowledged only once fsynced.
    pub fn sync_writes(&self) -> bool {
        self.flush_messages <= 1
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The broker timestamp written into the batch with `LogAppendTime`.
    pub log_append_time: Option<i64>,
    pub size: usize,
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes cut from the end of the active segment (a torn or unacknowledged tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub truncation_reason: Option<String>,
    /// Base offsets of segments whose indexes were rebuilt.
    pub rebuilt_indexes: Vec<u64>,
    /// Bytes of the active segment scanned to recover it.
    pub scanned_bytes: u64,
    pub next_offset: u64,
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: u64,
}

/// A pending fsync: run [`SyncTicket::sync`] without holding the log, then hand the ticket and
/// result to [`Log::finish_sync`]. This is how concurrent producers share fsyncs (group commit).
pub struct SyncTicket {
    file: Arc<dyn File>,
    segment_base: u64,
    end_offset: u64,
    end_pos: u64,
    messages: u64,
}

impl SyncTicket {
    /// Runs the fdatasync.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    /// The offset that becomes durable when the sync succeeds.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }
}

/// Remembered positions of offsets recent reads ended at, so a consumer reading on from where it
/// stopped does not walk from an index entry.
#[derive(Default)]
struct Hints {
    entries: [(u64, u64, u64); 8], // (offset, segment base, position)
    next: usize,
}

impl Hints {
    fn find(&self, offset: u64, segment_base: u64) -> Option<u64> {
        self.entries.iter().find(|e| e.0 == offset && e.1 == segment_base && e.0 != 0).map(|e| e.2)
    }
    fn remember(&mut self, offset: u64, segment_base: u64, pos: u64) {
        if self.entries.iter().any(|e| e.0 == offset && e.1 == segment_base) {
            return;
        }
        self.entries[self.next] = (offset, segment_base, pos);
        self.next = (self.next + 1) % self.entries.len();
    }
}

/// The outcome of planning a read.
pub enum ReadStart {
    /// Nothing to read: the offset is at the visible end of the log.
    AtEnd,
    /// Read with [`ReadPlan::execute`], outside the log's lock.
    Plan(ReadPlan),
}

/// Everything needed to read from one segment without touching the [`Log`].
pub struct ReadPlan {
    file: Arc<dyn File>,
    path: PathBuf,
    segment_base: u64,
    target: u64,
    scan_pos: u64,
    /// Readable bytes of this segment.
    end_pos: u64,
    /// Offsets at or above this are not readable.
    upper: u64,
    next_segment: Option<u64>,
    hints: Arc<Mutex<Hints>>,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadChunk {
    /// Whole batches (the first one holds the target offset or is the first one after it).
    Data { bytes: Bytes, next_offset: u64 },
    /// The target lies past this segment's data: plan again from this offset.
    NextSegment(u64),
    /// Nothing readable at or after the target.
    AtEnd,
}

impl ReadPlan {
    /// Reads whole batches starting with the one holding the target offset: at most `max_bytes`,
    /// except that with `min_one_batch` a first batch larger than that is returned whole.
    pub fn execute(&self, max_bytes: usize, min_one_batch: bool) -> Result<ReadChunk> {
        let target = self.target;
        let upper = self.upper;
        let first = segment::walk(&*self.file, &self.path, self.scan_pos, self.end_pos, |b| {
            b.last_offset >= target || b.base_offset >= upper
        })?;
        let first = match first {
            Some(b) if b.base_offset < upper => b,
            Some(_) => return Ok(ReadChunk::AtEnd),
            None => {
                return Ok(match self.next_segment {
                    Some(next) if next < upper => ReadChunk::NextSegment(next),
                    _ => ReadChunk::AtEnd,
                })
            }
        };
        let available = self.end_pos - first.pos;
        let want = if min_one_batch && first.size as usize > max_bytes {
            first.size
        } else {
            (max_bytes as u64).min(available)
        };
        let mut pooled = crate::pool::take(want as usize);
        let n = segment::read_up_to(&*self.file, &mut pooled[..want as usize], first.pos).at(&self.path)?;
        let buf = &pooled[..n];
        // Keep whole batches below `upper`.
        let mut keep = 0usize;
        let mut next_offset = first.base_offset;
        while let Some(size) = batch::peek_size(&buf[keep..]) {
            if keep + size > buf.len() || size < freshet_common::limits::RECORD_BATCH_HEADER_BYTES {
                break;
            }
            let h = BatchHeader::parse(&buf[keep..]).map_err(|e| LogError::Corrupt {
                path: self.path.clone(),
                pos: first.pos + keep as u64,
                reason: e.to_string(),
            })?;
            if h.base_offset as u64 >= upper {
                break;
            }
            keep += size;
            next_offset = h.next_offset() as u64;
        }
        if keep == 0 {
            return Ok(ReadChunk::Data { bytes: Bytes::new(), next_offset: first.base_offset });
        }
        self.hints.lock().expect("hints lock").remember(next_offset, self.segment_base, first.pos + keep as u64);
        Ok(ReadChunk::Data { bytes: crate::pool::into_bytes(pooled, keep), next_offset })
    }
}

/// One partition's log.
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    next_offset: u64,
    /// Offsets below this are on stable storage.
    durable_offset: u64,
    /// Bytes of the active segment on stable storage.
    durable_pos: u64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    failed: Option<String>,
    hints: Arc<Mutex<Hints>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("next_offset", &self.next_offset)
            .field("durable_offset", &self.durable_offset)
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from an unclean shutdown: sealed segments
    /// are trusted (they were fsynced before the next one was created) but their indexes are
    /// rebuilt if damaged; the active segment is scanned from its last durable index entry, and
    /// a torn or CRC-failing tail is cut off. The recovered log is fsynced before it is returned.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, config: LogConfig, now_ms: i64) -> Result<(Log, RecoveryReport)> {
        fs.create_dir_all(dir).at(dir)?;
        let mut report = RecoveryReport::default();
        // A compaction swap that was decided is finished; one that was not is forgotten.
        if let Some((new, old)) = crate::clean::read_manifest(&*fs, dir)? {
            crate::clean::complete_swap(&*fs, dir, &new, &old)?;
        }
        for path in fs.read_dir(dir).at(dir)? {
            if path.extension().is_some_and(|e| e == "cleaned") {
                fs.remove_file(&path).at(&path)?;
            }
        }
        let mut bases = Vec::new();
        for path in fs.read_dir(dir).at(dir)? {
            if let Some(base) = segment::parse_segment_name(&path, "log") {
                bases.push(base);
            } else if path.extension().is_some_and(|e| e == "tmp") {
                fs.remove_file(&path).at(&path)?;
            }
        }
        bases.sort_unstable();
        // Index files without their log (a deletion cut short) are removed.
        for path in fs.read_dir(dir).at(dir)? {
            let base =
                segment::parse_segment_name(&path, "index").or_else(|| segment::parse_segment_name(&path, "timeindex"));
            if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
                fs.remove_file(&path).at(&path)?;
            }
        }
        let checkpoint = read_log_start(&*fs, dir)?;
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let base = checkpoint.unwrap_or(0);
            segments.insert(base, Segment::create(&*fs, dir, base, now_ms)?);
            fs.sync_dir(dir).at(dir)?;
        }
        let interval = config.index_interval_bytes;
        for (i, &base) in bases.iter().enumerate() {
            if i + 1 < bases.len() {
                let (mut seg, rebuilt) = Segment::open_sealed(&*fs, dir, base, interval, now_ms)?;
                seg.next_offset = bases[i + 1];
                if rebuilt {
                    report.rebuilt_indexes.push(base);
                }
                segments.insert(base, seg);
            } else {
                let seg = recover_active(&*fs, dir, base, interval, now_ms, &mut report)?;
                segments.insert(base, seg);
            }
        }
        let active = segments.values().next_back().expect("a log has an active segment");
        let next_offset = active.next_offset;
        let first_base = *segments.keys().next().expect("a log has a segment");
        let log_start_offset = checkpoint.unwrap_or(first_base).clamp(first_base, next_offset);
        report.segments = segments.len();
        report.next_offset = next_offset;
        let durable_pos = active.size;
        let log = Log {
            fs,
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            next_offset,
            durable_offset: next_offset,
            durable_pos,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            failed: None,
            hints: Arc::default(),
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    /// Applies new settings (they take effect from the next append or maintenance pass).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }
    /// The log end offset: the offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub fn durable_offset(&self) -> u64 {
        self.durable_offset
    }
    /// The offset below which records are readable: durable ones with `flush.messages=1`, all
    /// appended ones otherwise.
    pub fn high_watermark(&self) -> u64 {
        if self.config.sync_writes() {
            self.durable_offset
        } else {
            self.next_offset
        }
    }
    /// Why the log refuses writes, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_writable(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(LogError::Failed { dir: self.dir.clone(), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, err: LogError) -> Result<T> {
        tracing::error!(dir = %self.dir.display(), error = %err, "log failed; refusing writes until reopened");
        self.failed = Some(err.to_string());
        Err(err)
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log has an active segment")
    }

    /// Appends one batch that [`batch::validate`] accepted: assigns its offsets (and with
    /// `LogAppendTime` its timestamp), rolls the segment if needed, writes it. The batch is not
    /// durable until a sync covering it finishes.
    pub fn append(&mut self, batch: &mut [u8], header: &BatchHeader, now_ms: i64) -> Result<AppendInfo> {
        self.check_writable()?;
        debug_assert_eq!(header.size(), batch.len(), "header does not describe this batch");
        if batch.len() > self.config.max_message_bytes {
            return Err(LogError::TooLarge { size: batch.len(), max: self.config.max_message_bytes });
        }
        let base_offset = self.next_offset;
        let count = header.last_offset_delta as u64 + 1;
        batch::set_base_offset(batch, base_offset as i64, 0);
        let (max_timestamp, log_append_time) = if self.config.log_append_time {
            batch::set_log_append_time(batch, now_ms);
            (now_ms, Some(now_ms))
        } else {
            (header.max_timestamp, None)
        };
        self.maybe_roll(batch.len() as u64, max_timestamp, now_ms)?;
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let pos = seg.size;
        if let Err(source) = seg.file.write_all_at(batch, pos) {
            let path = seg.path.clone();
            return self.fail(LogError::Io { path, source });
        }
        let info = BatchInfo {
            pos,
            base_offset,
            last_offset: base_offset + count - 1,
            size: batch.len() as u64,
            max_timestamp,
        };
        let mut indexes = seg.indexes.take().unwrap_or_default();
        seg.note_batch(&mut indexes, &info, interval);
        seg.indexes = Some(indexes);
        seg.size += batch.len() as u64;
        self.next_offset = base_offset + count;
        self.unflushed_messages += count;
        Ok(AppendInfo { base_offset, last_offset: info.last_offset, log_append_time, size: batch.len() })
    }

    fn maybe_roll(&mut self, incoming: u64, incoming_ts: i64, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + incoming > self.config.segment_bytes;
        let aged = match active.first_timestamp {
            Some(first) if first >= 0 => incoming_ts.saturating_sub(first) > self.config.segment_ms,
            _ => now_ms.saturating_sub(active.created_ms) > self.config.segment_ms,
        };
        if full || aged || self.next_offset - active.base >= u32::MAX as u64 {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment (fsync, final index entries) and starts a new one.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        self.check_writable()?;
        if self.active().size == 0 {
            return Ok(());
        }
        let fs = self.fs.clone();
        let dir = self.dir.clone();
        let seg = self.active_mut();
        let sealed = (|| {
            seg.file.sync_data().at(&seg.path)?;
            let mut indexes = seg.indexes.take().unwrap_or_default();
            seg.seal_indexes(&mut indexes);
            seg.indexes = Some(indexes);
            seg.write_all_indexes(&*fs, &dir)
        })();
        if let Err(e) = sealed {
            return self.fail(e);
        }
        self.durable_offset = self.next_offset;
        self.unflushed_messages = 0;
        let created = Segment::create(&*fs, &dir, self.next_offset, now_ms).and_then(|s| {
            fs.sync_dir(&dir).at(&dir)?;
            Ok(s)
        });
        match created {
            Ok(seg) => {
                self.segments.insert(seg.base, seg);
                self.durable_pos = 0;
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }

    /// A sync for everything appended so far, or None if it is all durable already.
    pub fn begin_sync(&self) -> Option<SyncTicket> {
        if self.durable_offset >= self.next_offset || self.failed.is_some() {
            return None;
        }
        let active = self.active();
        Some(SyncTicket {
            file: active.file.clone(),
            segment_base: active.base,
            end_offset: self.next_offset,
            end_pos: active.size,
            messages: self.unflushed_messages,
        })
    }

    /// Records the result of a ticket's sync. On success the offsets it covered are durable (and
    /// their index entries are written); on failure the log refuses writes from now on.
    pub fn finish_sync(&mut self, ticket: SyncTicket, result: std::io::Result<()>, now_ms: i64) -> Result<u64> {
        if let Err(source) = result {
            let path = segment::log_path(&self.dir, ticket.segment_base);
            return self.fail(LogError::Io { path, source });
        }
        if ticket.end_offset > self.durable_offset {
            self.durable_offset = ticket.end_offset;
            self.unflushed_messages = self.unflushed_messages.saturating_sub(ticket.messages);
            if ticket.segment_base == self.active().base {
                self.durable_pos = ticket.end_pos;
            }
        }
        self.last_flush_ms = now_ms;
        let fs = self.fs.clone();
        let dir = self.dir.clone();
        let durable = self.durable_offset;
        let seg = self.active_mut();
        let durable_rel = durable.saturating_sub(seg.base);
        if let Err(e) = seg.persist_durable_entries(&*fs, &dir, durable_rel) {
            return self.fail(e);
        }
        Ok(self.durable_offset)
    }

    /// Whether a relaxed (`flush.messages` > 1) log is due for an fsync.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.durable_offset < self.next_offset
            && (self.unflushed_messages >= self.config.flush_messages
                || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms)
    }

    /// Syncs everything appended so far, holding the log (maintenance and shutdown).
    pub fn flush(&mut self, now_ms: i64) -> Result<u64> {
        self.check_writable()?;
        match self.begin_sync() {
            Some(ticket) => {
                let result = ticket.sync();
                self.finish_sync(ticket, result, now_ms)
            }
            None => Ok(self.durable_offset),
        }
    }

    /// Flushes and writes the complete index files, leaving nothing for recovery to scan.
    pub fn close(mut self, now_ms: i64) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.flush(now_ms)?;
        let fs = self.fs.clone();
        let dir = self.dir.clone();
        self.active_mut().write_all_indexes(&*fs, &dir)
    }

    /// Plans a read at `offset` of records below `upper` (normally the high watermark).
    pub fn plan_read(&mut self, offset: u64, upper: u64) -> Result<ReadStart> {
        let upper = upper.min(self.next_offset);
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(LogError::OffsetOutOfRange { offset, start: self.log_start_offset, end: self.next_offset });
        }
        if offset >= upper {
            return Ok(ReadStart::AtEnd);
        }
        let base = *self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| b)
            .unwrap_or_else(|| self.segments.keys().next().expect("a log has a segment"));
        let next_segment = self.segments.range(base + 1..).next().map(|(b, _)| *b);
        let active_base = self.active().base;
        let (fs, dir, interval) = (self.fs.clone(), self.dir.clone(), self.config.index_interval_bytes);
        let durable_pos = self.durable_pos;
        let sync = self.config.sync_writes();
        let seg = self.segments.get_mut(&base).expect("segment exists");
        seg.ensure_indexes(&*fs, &dir, interval)?;
        let end_pos = if base == active_base && sync { durable_pos } else { seg.size };
        let hinted = self.hints.lock().expect("hints lock").find(offset, base);
        let scan_pos = match hinted {
            Some(pos) => pos,
            None => seg.floor(offset).1,
        };
        Ok(ReadStart::Plan(ReadPlan {
            file: seg.file.clone(),
            path: seg.path.clone(),
            segment_base: base,
            target: offset.max(base),
            scan_pos,
            end_pos,
            upper,
            next_segment,
            hints: self.hints.clone(),
        }))
    }

    /// Reads under the caller's hold of the log (tests and tools; the broker plans under its lock
    /// and executes outside it).
    pub fn read(&mut self, mut offset: u64, max_bytes: usize, min_one_batch: bool) -> Result<ReadChunk> {
        let upper = self.high_watermark();
        loop {
            match self.plan_read(offset, upper)? {
                ReadStart::AtEnd => return Ok(ReadChunk::AtEnd),
                ReadStart::Plan(plan) => match plan.execute(max_bytes, min_one_batch)? {
                    ReadChunk::NextSegment(next) => offset = next,
                    chunk => return Ok(chunk),
                },
            }
        }
    }

    /// Reads the whole batch holding `offset` in segment `base`.
    fn batch_at(&mut self, base: u64, offset: u64) -> Result<Option<Bytes>> {
        let (fs, dir, interval) = (self.fs.clone(), self.dir.clone(), self.config.index_interval_bytes);
        let seg = self.segments.get_mut(&base).expect("segment exists");
        seg.ensure_indexes(&*fs, &dir, interval)?;
        let (_, pos) = seg.floor(offset);
        let Some(b) = segment::walk(&*seg.file, &seg.path, pos, seg.size, |b| b.last_offset >= offset)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; b.size as usize];
        seg.file.read_exact_at(&mut buf, b.pos).at(&seg.path)?;
        Ok(Some(Bytes::from(buf)))
    }

    /// The first readable batch whose max timestamp is at or after `ts` (the caller finds the
    /// record inside it; batches may be compressed).
    pub fn find_batch_by_timestamp(&mut self, ts: i64) -> Result<Option<Bytes>> {
        let upper = self.high_watermark();
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let (fs, dir, interval) = (self.fs.clone(), self.dir.clone(), self.config.index_interval_bytes);
        for base in bases {
            let seg = self.segments.get_mut(&base).expect("segment exists");
            if seg.max_timestamp < ts && seg.size > 0 && seg.max_timestamp >= 0 {
                continue;
            }
            seg.ensure_indexes(&*fs, &dir, interval)?;
            let from_offset = seg
                .indexes
                .as_ref()
                .and_then(|ix| ix.last_time_before(ts))
                .map(|(_, rel)| seg.base + rel as u64)
                .unwrap_or(seg.base);
            let (_, pos) = seg.floor(from_offset);
            let start = self.log_start_offset;
            let found = segment::walk(&*seg.file, &seg.path, pos, seg.size, |b| {
                b.base_offset >= upper || (b.last_offset >= start && b.max_timestamp >= ts)
            })?;
            match found {
                Some(b) if b.base_offset < upper => {
                    let mut buf = vec![0u8; b.size as usize];
                    seg.file.read_exact_at(&mut buf, b.pos).at(&seg.path)?;
                    return Ok(Some(Bytes::from(buf)));
                }
                Some(_) => return Ok(None),
                None => continue,
            }
        }
        Ok(None)
    }

    /// The readable batch holding the largest timestamp (ListOffsets with MAX_TIMESTAMP).
    pub fn find_batch_with_max_timestamp(&mut self) -> Result<Option<Bytes>> {
        let upper = self.high_watermark();
        let best = self
            .segments
            .values()
            .filter(|s| s.size > 0 && s.offset_of_max_timestamp < upper)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.base, s.offset_of_max_timestamp));
        match best {
            Some((base, offset)) => self.batch_at(base, offset),
            None => Ok(None),
        }
    }

    /// (base offset, size, largest timestamp) of every segment, oldest first; the last is active.
    pub fn segment_summaries(&self) -> Vec<(u64, u64, i64)> {
        self.segments.values().map(|s| (s.base, s.size, s.max_timestamp)).collect()
    }

    /// Sealed segments wholly below `up_to` (nothing at or above it may be cleaned: the active
    /// segment, open transactions, records younger than the compaction lag), oldest first.
    pub fn plan_clean(&self, up_to: u64) -> Option<crate::CleanPlan> {
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let mut planned = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let Some(next) = bases.get(i + 1) else { break };
            if *next > up_to {
                break;
            }
            let seg = &self.segments[base];
            planned.push(crate::clean::Planned {
                base: *base,
                file: seg.file.clone(),
                path: seg.path.clone(),
                size: seg.size,
            });
        }
        (!planned.is_empty()).then(|| crate::CleanPlan {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            segments: planned,
            segment_bytes: self.config.segment_bytes,
            interval: self.config.index_interval_bytes,
        })
    }

    /// Swaps cleaned segments in for the ones they replace. Returns false (and drops the new
    /// files) when the log changed meanwhile (retention removed a replaced segment). When
    /// nothing was kept at the start of the log, the log start offset moves up to the first
    /// remaining segment (check [`Log::log_start_offset`] afterwards).
    pub fn swap_cleaned(&mut self, cleaned: crate::Cleaned, now_ms: i64) -> Result<bool> {
        let active = *self.segments.keys().next_back().expect("a log has an active segment");
        if cleaned.replaced.iter().any(|b| !self.segments.contains_key(b) || *b == active) {
            cleaned.discard(&*self.fs, &self.dir);
            return Ok(false);
        }
        let new: Vec<u64> = cleaned.segments.iter().map(|s| s.base).collect();
        crate::clean::write_manifest(&*self.fs, &self.dir, &new, &cleaned.replaced)?;
        crate::clean::complete_swap(&*self.fs, &self.dir, &new, &cleaned.replaced)?;
        for b in &cleaned.replaced {
            self.segments.remove(b);
        }
        for s in cleaned.segments {
            let seg = s.into_segment(&*self.fs, &self.dir, now_ms)?;
            self.segments.insert(seg.base, seg);
        }
        // Remembered read positions may point into replaced files.
        *self.hints.lock().expect("hints lock") = Hints::default();
        // If nothing was kept of the first segments, the log now starts at the first remaining
        // one: say so now, as `open` would after a restart.
        let first_base = *self.segments.keys().next().expect("a log has an active segment");
        self.log_start_offset = self.log_start_offset.max(first_base);
        Ok(true)
    }

    /// Deletes sealed segments past `retention.ms` or over `retention.bytes`, and segments wholly
    /// below the log start offset. A fully expired active segment is rolled first.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        loop {
            let (&base, first) = self.segments.iter().next().expect("a log has a segment");
            let is_active = self.segments.len() == 1;
            let next_base = if is_active { self.next_offset } else { first.next_offset };
            let expired_by_time = self.config.retention_enabled
                && self.config.retention_ms >= 0
                && first.size > 0
                && first.max_timestamp < now_ms.saturating_sub(self.config.retention_ms);
            let total = self.size_bytes();
            let over_size = self.config.retention_enabled
                && self.config.retention_bytes >= 0
                && total.saturating_sub(first.size) >= self.config.retention_bytes as u64
                && first.size > 0;
            let below_start = next_base <= self.log_start_offset && first.size > 0;
            if !(expired_by_time || over_size || below_start) {
                break;
            }
            if is_active {
                if !expired_by_time || self.failed.is_some() {
                    break;
                }
                self.roll(now_ms)?;
                continue;
            }
            let seg = self.segments.remove(&base).expect("segment exists");
            report.deleted_segments += 1;
            report.deleted_bytes += seg.size;
            let new_first = *self.segments.keys().next().expect("active segment remains");
            self.log_start_offset = self.log_start_offset.max(new_first);
            for path in [
                segment::log_path(&self.dir, base),
                segment::index_path(&self.dir, base),
                segment::time_index_path(&self.dir, base),
            ] {
                if self.fs.exists(&path) {
                    self.fs.remove_file(&path).at(&path)?;
                }
            }
            tracing::debug!(dir = %self.dir.display(), base, "deleted segment");
        }
        report.log_start_offset = self.log_start_offset;
        Ok(report)
    }

    /// Moves the log start offset to `offset` (DeleteRecords) and deletes the segments wholly
    /// below it. `offset` must not be above the high watermark.
    pub fn delete_records_before(&mut self, offset: u64, now_ms: i64) -> Result<u64> {
        let hw = self.high_watermark();
        if offset > hw {
            return Err(LogError::OffsetOutOfRange { offset, start: self.log_start_offset, end: hw });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        let path = self.dir.join(LOG_START_FILE);
        fs::write_atomic(&*self.fs, &path, offset.to_string().as_bytes()).at(&path)?;
        // Segments wholly below the new start go now, not at the next retention pass.
        let saved = (self.config.retention_ms, self.config.retention_bytes);
        (self.config.retention_ms, self.config.retention_bytes) = (-1, -1);
        let result = self.apply_retention(now_ms);
        (self.config.retention_ms, self.config.retention_bytes) = saved;
        result.map(|r| r.log_start_offset)
    }
}

fn read_log_start(fs: &dyn Fs, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(LOG_START_FILE);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let bytes = fs::read_all(fs, &path).at(&path)?;
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse() {
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(LogError::Corrupt { path, pos: 0, reason: format!("not an offset: {text:?}") }),
    }
}

/// Recovers the active (last) segment: trusts index entries (they only ever point at durable
/// data), scans forward from the last one checking every batch, cuts a damaged tail, fsyncs.
fn recover_active(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    interval: u64,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<Segment> {
    let path = segment::log_path(dir, base);
    let file = fs.open(&path, false).at(&path)?;
    let file_len = file.len().at(&path)?;
    let ipath = segment::index_path(dir, base);
    let tpath = segment::time_index_path(dir, base);
    let index_bytes = if fs.exists(&ipath) { fs::read_all(fs, &ipath).at(&ipath)? } else { Vec::new() };
    let time_bytes = if fs.exists(&tpath) { fs::read_all(fs, &tpath).at(&tpath)? } else { Vec::new() };
    let (mut offsets, _) = crate::index::Indexes::decode_offsets(&index_bytes, file_len);
    // The last entries must point at a batch with the offset they name; drop any that do not.
    while let Some(&(rel, pos)) = offsets.last() {
        let mut head = [0u8; 8];
        let ok = file.read_exact_at(&mut head, pos as u64).is_ok() && u64::from_be_bytes(head) == base + rel as u64;
        if ok {
            break;
        }
        offsets.pop();
    }
    let (start_rel, start_pos) = offsets.last().copied().unwrap_or((0, 0));
    let (mut times, _) = crate::index::Indexes::decode_times(&time_bytes, start_rel);
    times.retain(|&(_, rel)| rel <= start_rel);
    let mut seg = Segment {
        base,
        file: file.clone(),
        path: path.clone(),
        size: start_pos as u64,
        next_offset: base + start_rel as u64,
        max_timestamp: times.last().map(|t| t.0).unwrap_or(-1),
        offset_of_max_timestamp: base + times.last().map(|t| t.1).unwrap_or(0) as u64,
        first_timestamp: None,
        created_ms: now_ms,
        indexes: None,
        index_files: None,
    };
    let mut indexes = crate::index::Indexes {
        persisted_offsets: offsets.len(),
        persisted_times: times.len(),
        offsets,
        times,
        bytes_since_entry: 0,
    };
    if start_pos > 0 {
        // Index entries only exist past the first batch: read its timestamp for segment.ms.
        let mut head = [0u8; freshet_common::limits::RECORD_BATCH_HEADER_BYTES];
        file.read_exact_at(&mut head, 0).at(&path)?;
        seg.first_timestamp = BatchHeader::parse(&head).ok().map(|h| h.max_timestamp);
    }
    let scan = segment::scan(&*file, &path, start_pos as u64, file_len, true, |b| {
        seg.note_batch(&mut indexes, b, interval);
    })?;
    report.scanned_bytes = file_len - start_pos as u64;
    seg.size = scan.end;
    if scan.end < file_len {
        let reason = scan.damage.map(|(pos, r)| format!("at byte {pos}: {r}")).unwrap_or_default();
        tracing::warn!(segment = %path.display(), cut = file_len - scan.end, %reason, "truncating the unacknowledged tail of the log");
        report.truncated_bytes = file_len - scan.end;
        report.truncation_reason = Some(reason);
        file.set_len(scan.end).at(&path)?;
    }
    // Whatever recovery kept is now made durable before anyone can read it.
    file.sync_data().at(&path)?;
    // Rewrite the index files to match exactly what was kept.
    seg.indexes = Some(indexes);
    seg.write_all_indexes(fs, dir)?;
    Ok(seg)
}
