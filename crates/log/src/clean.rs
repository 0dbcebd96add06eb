//! The storage half of log compaction: rewriting sealed segments without some of their
//! records, and swapping the result in so that a crash at any point leaves either the old
//! segments or the new ones. Which records survive is the caller's policy (see the broker's
//! cleaner); this module only moves bytes.
//!
//! The rewrite reads sealed segments (immutable) without the log's lock; only the swap takes it.
//!
//! Swap protocol:
//! 1. every new segment is written as `<base>.cleaned` and fsynced;
//! 2. `clean.swap` lists the new and the replaced bases, is fsynced with its directory: from
//!    here on the swap is decided;
//! 3. the replaced segments (and their index files) are deleted, each `<base>.cleaned` renamed
//!    to `<base>.log` (after removing stale index files of that base); the directory is fsynced,
//!    then `clean.swap` removed and the directory fsynced again;
//! 4. the new segments' index files are written (`Log::swap_cleaned`). A crash before that
//!    leaves sealed segments without indexes, which `Log::open` rebuilds.
//!
//! `Log::open` finishes a decided swap (step 3 is idempotent) and deletes `.cleaned` files of
//! one that was not. A rewrite that fails (an I/O error, or the caller's `keep` refusing)
//! removes the `.cleaned` files it wrote and leaves the log as it was.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch;
use crate::error::{IoContext, Result};
use crate::fs::{self, File, Fs};
use crate::index::Indexes;
use crate::segment::{self, BatchInfo, Segment};

pub(crate) const SWAP_MANIFEST: &str = "clean.swap";

pub(crate) fn cleaned_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.cleaned"))
}

/// A sealed segment chosen for cleaning.
pub(crate) struct Planned {
    pub base: u64,
    pub file: Arc<dyn File>,
    pub path: PathBuf,
    pub size: u64,
}

/// Consecutive sealed segments to clean, taken under the log's lock and worked on outside it.
pub struct CleanPlan {
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<Planned>,
    pub(crate) segment_bytes: u64,
    pub(crate) interval: u64,
}

/// A new segment written by a rewrite.
pub(crate) struct CleanedSegment {
    pub base: u64,
    pub size: u64,
    pub indexes: Indexes,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: u64,
    pub first_timestamp: Option<i64>,
    pub next_offset: u64,
}

/// The result of a rewrite, ready for [`crate::Log::swap_cleaned`].
pub struct Cleaned {
    pub(crate) replaced: Vec<u64>,
    pub(crate) segments: Vec<CleanedSegment>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl CleanPlan {
    /// Offsets the plan covers: from the first segment's base up to (not including) this.
    pub fn bases(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.base).collect()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Positions of every batch of a planned segment, checked (CRC): damaged data is never
    /// cleaned into new segments.
    fn batches_of(seg: &Planned) -> Result<Vec<BatchInfo>> {
        let mut infos = Vec::new();
        let scan = segment::scan(&*seg.file, &seg.path, 0, seg.size, true, |b| infos.push(*b))?;
        if let Some((pos, reason)) = scan.damage {
            return Err(crate::LogError::Corrupt { path: seg.path.clone(), pos, reason });
        }
        Ok(infos)
    }

    /// Calls `f` with every batch of the planned segments, in offset order.
    pub fn for_each_batch(&self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let mut buf = Vec::new();
        for seg in &self.segments {
            for b in Self::batches_of(seg)? {
                buf.resize(b.size as usize, 0);
                seg.file.read_exact_at(&mut buf, b.pos).at(&seg.path)?;
                f(&buf);
            }
        }
        Ok(())
    }

    /// Rewrites the planned segments: `keep` gets each batch and returns the bytes to write in its
    /// place (the batch itself, a smaller batch with the same offsets, or None to drop it), or an
    /// error, which abandons the rewrite ([`crate::LogError::CleanAborted`]): nothing is dropped
    /// because the caller could not decide. Output is grouped into segments of at most
    /// `segment.bytes`. One batch is in memory at a time. On any error the files written so far
    /// are removed.
    pub fn rewrite<E: std::fmt::Display>(
        &self,
        keep: impl for<'a> FnMut(&'a [u8]) -> std::result::Result<Option<Cow<'a, [u8]>>, E>,
    ) -> Result<Cleaned> {
        let mut written = Vec::new();
        let result = self.rewrite_into(keep, &mut written);
        if result.is_err() {
            for path in &written {
                let _ = self.fs.remove_file(path);
            }
        }
        result
    }

    fn rewrite_into<E: std::fmt::Display>(
        &self,
        mut keep: impl for<'a> FnMut(&'a [u8]) -> std::result::Result<Option<Cow<'a, [u8]>>, E>,
        written: &mut Vec<PathBuf>,
    ) -> Result<Cleaned> {
        let mut out: Vec<CleanedSegment> = Vec::new();
        let mut current: Option<(CleanedSegment, Arc<dyn File>, PathBuf)> = None;
        let finish =
            |cur: Option<(CleanedSegment, Arc<dyn File>, PathBuf)>, out: &mut Vec<CleanedSegment>| -> Result<()> {
                if let Some((seg, file, path)) = cur {
                    file.sync_data().at(&path)?;
                    out.push(seg);
                }
                Ok(())
            };
        let mut buf = Vec::new();
        for planned in &self.segments {
            for b in Self::batches_of(planned)? {
                buf.resize(b.size as usize, 0);
                planned.file.read_exact_at(&mut buf, b.pos).at(&planned.path)?;
                let kept = keep(&buf).map_err(|e| crate::LogError::CleanAborted(e.to_string()))?;
                let Some(kept) = kept else { continue };
                let header = batch::BatchHeader::parse(&kept)?;
                if batch::peek_size(&kept) != Some(kept.len()) {
                    return Err(crate::LogError::CleanAborted(format!(
                        "the batch kept in place of offset {} is not exactly one batch",
                        header.base_offset
                    )));
                }
                let size = kept.len() as u64;
                let full =
                    current.as_ref().is_some_and(|(seg, _, _)| seg.size > 0 && seg.size + size > self.segment_bytes);
                if full {
                    finish(current.take(), &mut out)?;
                }
                if current.is_none() {
                    // A new segment is named after the first offset it holds (the first one
                    // keeps the first planned segment's base).
                    let base = if out.is_empty() { self.segments[0].base } else { header.base_offset as u64 };
                    let path = cleaned_path(&self.dir, base);
                    if self.fs.exists(&path) {
                        self.fs.remove_file(&path).at(&path)?;
                    }
                    let file = self.fs.open(&path, true).at(&path)?;
                    written.push(path.clone());
                    let seg = CleanedSegment {
                        base,
                        size: 0,
                        indexes: Indexes::default(),
                        max_timestamp: -1,
                        offset_of_max_timestamp: base,
                        first_timestamp: None,
                        next_offset: base,
                    };
                    current = Some((seg, file, path));
                }
                let (seg, file, path) = current.as_mut().expect("just set");
                file.write_all_at(&kept, seg.size).at(path)?;
                let info = BatchInfo {
                    pos: seg.size,
                    base_offset: header.base_offset as u64,
                    last_offset: header.last_offset() as u64,
                    size,
                    max_timestamp: header.max_timestamp,
                };
                if seg.first_timestamp.is_none() {
                    seg.first_timestamp = Some(info.max_timestamp);
                }
                if info.max_timestamp > seg.max_timestamp {
                    seg.max_timestamp = info.max_timestamp;
                    seg.offset_of_max_timestamp = info.base_offset;
                }
                seg.indexes.on_append(
                    (info.base_offset - seg.base) as u32,
                    info.pos as u32,
                    size,
                    self.interval,
                    seg.max_timestamp,
                );
                seg.next_offset = info.last_offset + 1;
                seg.size += size;
            }
        }
        finish(current.take(), &mut out)?;
        let bytes_after = out.iter().map(|s| s.size).sum();
        Ok(Cleaned { replaced: self.bases(), segments: out, bytes_before: self.bytes(), bytes_after })
    }
}

impl Cleaned {
    /// Deletes the rewritten files (the swap was abandoned).
    pub(crate) fn discard(&self, fs: &dyn Fs, dir: &Path) {
        for s in &self.segments {
            let _ = fs.remove_file(&cleaned_path(dir, s.base));
        }
    }
}

/// The decided swap, as written in `clean.swap`: "new: b1 b2 ...\nold: b3 b4 ...".
pub(crate) fn write_manifest(fs: &dyn Fs, dir: &Path, new: &[u64], old: &[u64]) -> Result<()> {
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let text = format!("new: {}\nold: {}\n", join(new), join(old));
    let path = dir.join(SWAP_MANIFEST);
    fs::write_atomic(fs, &path, text.as_bytes()).at(&path)
}

pub(crate) fn read_manifest(fs: &dyn Fs, dir: &Path) -> Result<Option<(Vec<u64>, Vec<u64>)>> {
    let path = dir.join(SWAP_MANIFEST);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&fs::read_all(fs, &path).at(&path)?).to_string();
    let list = |prefix: &str| -> Vec<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    Ok(Some((list("new:"), list("old:"))))
}

/// Step 3 of the swap: delete the replaced segments, put the new ones in place. Idempotent.
pub(crate) fn complete_swap(fs: &dyn Fs, dir: &Path, new: &[u64], old: &[u64]) -> Result<()> {
    for &base in old {
        if new.contains(&base) && !fs.exists(&cleaned_path(dir, base)) {
            // Already renamed over in an earlier attempt: keep it.
            continue;
        }
        for p in [segment::log_path(dir, base), segment::index_path(dir, base), segment::time_index_path(dir, base)] {
            if fs.exists(&p) {
                fs.remove_file(&p).at(&p)?;
            }
        }
    }
    for &base in new {
        let from = cleaned_path(dir, base);
        if fs.exists(&from) {
            for p in [segment::index_path(dir, base), segment::time_index_path(dir, base)] {
                if fs.exists(&p) {
                    fs.remove_file(&p).at(&p)?;
                }
            }
            fs.rename(&from, &segment::log_path(dir, base)).at(&from)?;
        }
    }
    fs.sync_dir(dir).at(dir)?;
    let manifest = dir.join(SWAP_MANIFEST);
    if fs.exists(&manifest) {
        fs.remove_file(&manifest).at(&manifest)?;
        fs.sync_dir(dir).at(dir)?;
    }
    Ok(())
}

impl CleanedSegment {
    /// The in-memory segment for the swapped-in file.
    pub(crate) fn into_segment(self, fs: &dyn Fs, dir: &Path, now_ms: i64) -> Result<Segment> {
        let path = segment::log_path(dir, self.base);
        let file = fs.open(&path, false).at(&path)?;
        let mut indexes = self.indexes;
        let mut seg = Segment {
            base: self.base,
            file,
            path,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            first_timestamp: self.first_timestamp,
            created_ms: now_ms,
            indexes: None,
            index_files: None,
        };
        seg.seal_indexes(&mut indexes);
        seg.indexes = Some(indexes);
        seg.write_all_indexes(fs, dir)?;
        Ok(seg)
    }
}
