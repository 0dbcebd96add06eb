//! One segment: a `.log` file of consecutive record batches starting at `base`, with its indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use freshet_common::limits::{LOG_OVERHEAD, RECORD_BATCH_HEADER_BYTES};

use crate::batch::{self, BatchHeader};
use crate::error::{IoContext, LogError, Result};
use crate::fs::{File, Fs};
use crate::index::{Indexes, OFFSET_ENTRY, TIME_ENTRY};

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(path: &Path, ext: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

/// The fields of a batch header a scan or walk needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub pos: u64,
    pub base_offset: u64,
    pub last_offset: u64,
    pub size: u64,
    pub max_timestamp: i64,
}

pub(crate) struct Segment {
    pub base: u64,
    pub file: Arc<dyn File>,
    pub path: PathBuf,
    /// Bytes of valid batches.
    pub size: u64,
    /// Offset after the last batch (only exact for the active segment and loaded segments).
    pub next_offset: u64,
    /// Largest batch max timestamp in the segment, -1 when empty or unknown.
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: u64,
    /// Max timestamp of the first batch (the reference for `segment.ms`).
    pub first_timestamp: Option<i64>,
    /// Wall-clock time the segment was created or opened.
    pub created_ms: i64,
    /// In memory for the active segment; loaded on first use for sealed ones.
    pub indexes: Option<Indexes>,
    /// Open index files (offset, time), kept so each sync does not reopen them.
    pub(crate) index_files: Option<(Arc<dyn File>, Arc<dyn File>)>,
}

impl Segment {
    pub fn create(fs: &dyn Fs, dir: &Path, base: u64, now_ms: i64) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = fs.open(&path, true).at(&path)?;
        let size = file.len().at(&path)?;
        debug_assert_eq!(size, 0, "new segment {} is not empty", path.display());
        // Stale index files of an earlier segment with this base would confuse recovery.
        for p in [index_path(dir, base), time_index_path(dir, base)] {
            if fs.exists(&p) {
                fs.remove_file(&p).at(&p)?;
            }
        }
        Ok(Segment {
            base,
            file,
            path,
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            first_timestamp: None,
            created_ms: now_ms,
            indexes: Some(Indexes::default()),
            index_files: None,
        })
    }

    /// Opens a sealed segment cheaply: size and max timestamp come from the file length and the
    /// time index's last entry; the indexes load on first use. Rebuilds the indexes now if their
    /// files are missing or malformed.
    pub fn open_sealed(fs: &dyn Fs, dir: &Path, base: u64, interval: u64, now_ms: i64) -> Result<(Segment, bool)> {
        let path = log_path(dir, base);
        let file = fs.open(&path, false).at(&path)?;
        let size = file.len().at(&path)?;
        let mut seg = Segment {
            base,
            file,
            path,
            size,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            first_timestamp: None,
            created_ms: now_ms,
            indexes: None,
            index_files: None,
        };
        let ipath = index_path(dir, base);
        let tpath = time_index_path(dir, base);
        let index_len =
            if fs.exists(&ipath) { Some(fs.open(&ipath, false).at(&ipath)?.len().at(&ipath)?) } else { None };
        let time_file = if fs.exists(&tpath) { Some(fs.open(&tpath, false).at(&tpath)?) } else { None };
        let time_len = match &time_file {
            Some(f) => Some(f.len().at(&tpath)?),
            None => None,
        };
        let plausible = matches!(index_len, Some(l) if l % OFFSET_ENTRY as u64 == 0)
            && matches!(time_len, Some(l) if l % TIME_ENTRY as u64 == 0 && (l > 0 || size == 0));
        if !plausible {
            seg.rebuild_indexes(fs, dir, interval)?;
            return Ok((seg, true));
        }
        if let (Some(tf), Some(tl)) = (time_file, time_len) {
            if tl > 0 {
                let mut last = [0u8; TIME_ENTRY];
                tf.read_exact_at(&mut last, tl - TIME_ENTRY as u64).at(&tpath)?;
                seg.max_timestamp = i64::from_be_bytes(last[0..8].try_into().expect("8 bytes"));
                seg.offset_of_max_timestamp =
                    base + u32::from_be_bytes(last[8..12].try_into().expect("4 bytes")) as u64;
            }
        }
        Ok((seg, false))
    }

    /// Loads a sealed segment's indexes if they are not in memory, rebuilding them from the log
    /// when the files do not check out. Corruption found while rebuilding is an error.
    pub fn ensure_indexes(&mut self, fs: &dyn Fs, dir: &Path, interval: u64) -> Result<()> {
        if self.indexes.is_some() {
            return Ok(());
        }
        let ipath = index_path(dir, self.base);
        let tpath = time_index_path(dir, self.base);
        let (offsets, ok1) = Indexes::decode_offsets(&crate::fs::read_all(fs, &ipath).at(&ipath)?, self.size);
        let (times, ok2) = Indexes::decode_times(&crate::fs::read_all(fs, &tpath).at(&tpath)?, u32::MAX);
        if ok1 && ok2 {
            let (po, pt) = (offsets.len(), times.len());
            self.indexes =
                Some(Indexes { offsets, times, persisted_offsets: po, persisted_times: pt, bytes_since_entry: 0 });
            return Ok(());
        }
        tracing::warn!(segment = %self.path.display(), "index files are damaged; rebuilding them");
        self.rebuild_indexes(fs, dir, interval)
    }

    /// Rebuilds a sealed segment's indexes by scanning every batch (checking CRCs), then writes
    /// and fsyncs them. A damaged batch inside a sealed segment is corruption and is reported.
    fn rebuild_indexes(&mut self, fs: &dyn Fs, dir: &Path, interval: u64) -> Result<()> {
        let mut indexes = Indexes::default();
        let (file, path, size) = (self.file.clone(), self.path.clone(), self.size);
        let scan = scan(&*file, &path, 0, size, true, |b| {
            self.note_batch(&mut indexes, b, interval);
        })?;
        if let Some((pos, reason)) = scan.damage {
            return Err(LogError::Corrupt { path: self.path.clone(), pos, reason });
        }
        self.seal_indexes(&mut indexes);
        self.indexes = Some(indexes);
        self.write_all_indexes(fs, dir)?;
        Ok(())
    }

    /// Updates the segment's bookkeeping and `indexes` for a batch found by a scan.
    pub fn note_batch(&mut self, indexes: &mut Indexes, b: &BatchInfo, interval: u64) {
        if self.first_timestamp.is_none() {
            self.first_timestamp = Some(b.max_timestamp);
        }
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        let rel = (b.base_offset - self.base) as u32;
        indexes.on_append(rel, b.pos as u32, b.size, interval, self.max_timestamp);
        self.next_offset = b.last_offset + 1;
    }

    /// Adds the final time index entry (the segment's max timestamp) before sealing.
    pub fn seal_indexes(&self, indexes: &mut Indexes) {
        if self.max_timestamp >= 0 || self.size > 0 {
            indexes.push_time(self.max_timestamp, (self.offset_of_max_timestamp - self.base) as u32);
        }
    }

    fn index_files(&mut self, fs: &dyn Fs, dir: &Path) -> Result<(Arc<dyn File>, Arc<dyn File>)> {
        if self.index_files.is_none() {
            let (ipath, tpath) = (index_path(dir, self.base), time_index_path(dir, self.base));
            self.index_files = Some((fs.open(&ipath, true).at(&ipath)?, fs.open(&tpath, true).at(&tpath)?));
        }
        Ok(self.index_files.clone().expect("just opened"))
    }

    /// Writes the complete index files and fsyncs them (sealing, rebuilding, clean shutdown).
    pub fn write_all_indexes(&mut self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        if self.indexes.is_none() {
            return Ok(());
        }
        let (ifile, tfile) = self.index_files(fs, dir)?;
        let ix = self.indexes.as_mut().expect("checked above");
        for (file, path, bytes) in [
            (ifile, index_path(dir, self.base), Indexes::encode_offsets(&ix.offsets)),
            (tfile, time_index_path(dir, self.base), Indexes::encode_times(&ix.times)),
        ] {
            file.set_len(0).at(&path)?;
            file.write_all_at(&bytes, 0).at(&path)?;
            file.sync_data().at(&path)?;
        }
        ix.persisted_offsets = ix.offsets.len();
        ix.persisted_times = ix.times.len();
        Ok(())
    }

    /// Appends to the index files the entries for batches below relative offset `durable_rel`.
    pub fn persist_durable_entries(&mut self, fs: &dyn Fs, dir: &Path, durable_rel: u64) -> Result<()> {
        let Some(ix) = self.indexes.as_ref() else { return Ok(()) };
        let offsets_upto = ix.offsets.partition_point(|&(o, _)| (o as u64) < durable_rel);
        let times_upto = ix.times.partition_point(|&(_, o)| (o as u64) < durable_rel);
        if offsets_upto <= ix.persisted_offsets && times_upto <= ix.persisted_times {
            return Ok(());
        }
        let (ifile, tfile) = self.index_files(fs, dir)?;
        let ix = self.indexes.as_mut().expect("checked above");
        if offsets_upto > ix.persisted_offsets {
            let bytes = Indexes::encode_offsets(&ix.offsets[ix.persisted_offsets..offsets_upto]);
            ifile.write_all_at(&bytes, (ix.persisted_offsets * OFFSET_ENTRY) as u64).at(&index_path(dir, self.base))?;
            ix.persisted_offsets = offsets_upto;
        }
        if times_upto > ix.persisted_times {
            let bytes = Indexes::encode_times(&ix.times[ix.persisted_times..times_upto]);
            tfile
                .write_all_at(&bytes, (ix.persisted_times * TIME_ENTRY) as u64)
                .at(&time_index_path(dir, self.base))?;
            ix.persisted_times = times_upto;
        }
        Ok(())
    }

    /// Position from which to walk to find `offset`: the index floor entry.
    pub fn floor(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base).min(u32::MAX as u64) as u32;
        let (r, p) = self.indexes.as_ref().map(|ix| ix.floor(rel)).unwrap_or((0, 0));
        (self.base + r as u64, p as u64)
    }
}

/// What a scan found.
pub(crate) struct ScanResult {
    /// Byte position just past the last good batch.
    pub end: u64,
    /// The first damaged batch, if any: position and reason.
    pub damage: Option<(u64, String)>,
}

const SCAN_CHUNK: usize = 1 << 20;

/// Reads batches from `from` to `to`, checking each (length, magic, and with `check_crc` the CRC),
/// calling `f` for every good batch; stops at the first damaged one.
pub(crate) fn scan(
    file: &dyn File,
    path: &Path,
    from: u64,
    to: u64,
    check_crc: bool,
    mut f: impl FnMut(&BatchInfo),
) -> Result<ScanResult> {
    // `buf` holds the file bytes [buf_pos, buf_pos + buf.len()).
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = from;
    let refill = |buf: &mut Vec<u8>, buf_pos: &mut u64, pos: u64, len: usize| -> Result<()> {
        let len = (to - pos).min(len.max(SCAN_CHUNK) as u64) as usize;
        buf.resize(len, 0);
        let n = read_up_to(file, buf, pos).at(path)?;
        buf.truncate(n);
        *buf_pos = pos;
        Ok(())
    };
    let holds = |buf: &Vec<u8>, buf_pos: u64, pos: u64, len: usize| {
        pos >= buf_pos && pos + len as u64 <= buf_pos + buf.len() as u64
    };
    let damaged = |pos: u64, reason: String| Ok(ScanResult { end: pos, damage: Some((pos, reason)) });
    let mut pos = from;
    let mut last_offset: Option<u64> = None;
    while pos < to {
        if !holds(&buf, buf_pos, pos, RECORD_BATCH_HEADER_BYTES) {
            refill(&mut buf, &mut buf_pos, pos, RECORD_BATCH_HEADER_BYTES)?;
            if !holds(&buf, buf_pos, pos, RECORD_BATCH_HEADER_BYTES) {
                return damaged(pos, format!("{} trailing bytes are too short for a batch header", to - pos));
            }
        }
        let header = match BatchHeader::parse(&buf[(pos - buf_pos) as usize..]) {
            Ok(h) => h,
            Err(e) => return damaged(pos, e.to_string()),
        };
        let size = header.size();
        if pos + size as u64 > to {
            return damaged(pos, format!("batch of {size} bytes runs past the end"));
        }
        if !holds(&buf, buf_pos, pos, size) {
            refill(&mut buf, &mut buf_pos, pos, size)?;
            if !holds(&buf, buf_pos, pos, size) {
                return damaged(pos, "batch is cut short".into());
            }
        }
        let at = (pos - buf_pos) as usize;
        if check_crc {
            if let Err(e) = batch::validate_stored(&buf[at..at + size]) {
                return damaged(pos, e.to_string());
            }
        }
        if header.base_offset < 0 || last_offset.is_some_and(|l| header.base_offset as u64 <= l) {
            return damaged(pos, format!("batch offset {} does not follow the previous batch", header.base_offset));
        }
        let info = BatchInfo {
            pos,
            base_offset: header.base_offset as u64,
            last_offset: header.last_offset() as u64,
            size: size as u64,
            max_timestamp: header.max_timestamp,
        };
        last_offset = Some(info.last_offset);
        f(&info);
        pos += size as u64;
    }
    Ok(ScanResult { end: pos, damage: None })
}

/// Reads as many bytes as the file has at `pos`, up to `buf.len()`.
pub(crate) fn read_up_to(file: &dyn File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Walks batch headers (no CRC check) from `pos`, reading a window at a time, until `stop`
/// returns true for a batch or `end` is reached. Returns the batch it stopped at.
pub(crate) fn walk(
    file: &dyn File,
    path: &Path,
    mut pos: u64,
    end: u64,
    mut stop: impl FnMut(&BatchInfo) -> bool,
) -> Result<Option<BatchInfo>> {
    const WINDOW: usize = 16 * 1024;
    let mut buf = vec![0u8; WINDOW];
    let mut buf_pos = u64::MAX;
    let mut buf_len = 0usize;
    while pos < end {
        // The 43 bytes up to and including the max timestamp are all a walk needs.
        const NEED: usize = 43;
        if buf_pos == u64::MAX || pos < buf_pos || pos + NEED as u64 > buf_pos + buf_len as u64 {
            let len = ((end - pos) as usize).min(WINDOW);
            buf_len = read_up_to(file, &mut buf[..len], pos).at(path)?;
            buf_pos = pos;
            if buf_len < NEED {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    pos,
                    reason: "truncated batch header".into(),
                });
            }
        }
        let at = (pos - buf_pos) as usize;
        let h = &buf[at..at + NEED];
        let magic = h[16] as i8;
        let len = i32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        if magic != 2 || (len as i64) < (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD) as i64 {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                pos,
                reason: format!("bad batch header (magic {magic}, length {len})"),
            });
        }
        let base = i64::from_be_bytes(h[0..8].try_into().expect("8 bytes")) as u64;
        let delta = i32::from_be_bytes(h[23..27].try_into().expect("4 bytes")) as u64;
        let info = BatchInfo {
            pos,
            base_offset: base,
            last_offset: base + delta,
            size: len as u64 + LOG_OVERHEAD as u64,
            max_timestamp: i64::from_be_bytes(h[35..43].try_into().expect("8 bytes")),
        };
        if stop(&info) {
            return Ok(Some(info));
        }
        pos += info.size;
    }
    Ok(None)
}
