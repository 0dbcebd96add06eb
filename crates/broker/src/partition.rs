//! One partition: its log behind a mutex, plus the signals that drive group commit and long
//! polling.
//!
//! Group commit: an append that needs durability calls [`Partition::schedule_sync`]; if no sync
//! is running for this partition, one starts on a blocking thread and keeps syncing until
//! nothing is left, so every append that arrived while an fsync was running shares the next one.
//! Waiters watch the `durable` channel.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use freshet_log::fs::Fs;
use freshet_log::{AppendInfo, BatchHeader, Log, LogConfig, LogError, ReadChunk, ReadStart};
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, watch};

use crate::broker::now_ms;
use crate::cleaner::{CleanReport, CompactionConfig};
use crate::producers::{Check, ProducerState};

/// Durability progress of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Offsets below this are on stable storage.
    pub offset: u64,
    /// An fsync or write failed: nothing past `offset` will become durable.
    pub failed: bool,
}

enum State {
    Online(Log),
    Offline(String),
    Closed,
}

/// What a read returned, with the partition's offsets at the time.
#[derive(Debug, Clone)]
pub struct ReadOutput {
    pub records: Bytes,
    pub high_watermark: u64,
    pub last_stable_offset: u64,
    pub log_start_offset: u64,
    /// For read_committed reads: aborted transactions in the range, as (producer id, first offset).
    pub aborted: Vec<(i64, u64)>,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub info: AppendInfo,
    pub log_start_offset: u64,
    /// The write is durable only after the next fsync, which the writer schedules: with
    /// `flush.messages=1` (readable only then, too), and for transaction markers always.
    pub needs_sync: bool,
}

/// The outcome of an append: where it landed, or the Kafka error and why.
pub type AppendResult = Result<Appended, (ResponseError, String)>;

struct AppendJob {
    batch: BytesMut,
    header: BatchHeader,
    now: i64,
    /// A transaction marker (commit: true) rather than a producer's data.
    marker: Option<bool>,
    done: oneshot::Sender<AppendResult>,
}

/// Name of the producer state snapshot in a partition directory.
const PRODUCER_SNAPSHOT: &str = "producer-state";

/// How long a partition waits after a failed compaction pass before trying again.
const CLEAN_RETRY_MS: i64 = 60_000;

/// Least time between two producer state snapshots of a busy partition.
const SNAPSHOT_INTERVAL_MS: i64 = 30_000;

/// A partition of a topic.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    state: Mutex<State>,
    /// The high watermark: offsets below it are readable.
    visible: watch::Sender<u64>,
    durable: watch::Sender<Durable>,
    syncing: AtomicBool,
    /// Appends waiting for the writer, in order.
    appends: Mutex<VecDeque<AppendJob>>,
    writing: AtomicBool,
    /// Producer ids, sequences, open and aborted transactions. Lock after `state`.
    producers: Mutex<ProducerState>,
    /// (end offset, time) of the last producer state snapshot.
    snapshot: Mutex<(u64, i64)>,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Set when the topic's cleanup policy compacts.
    compaction: Mutex<Option<CompactionConfig>>,
    /// The offset the last compaction pass reached (dirty data starts there).
    cleaned_up_to: std::sync::atomic::AtomicU64,
    /// When tombstones the last pass kept become removable (ms; i64::MAX: none kept).
    tombstones_due: std::sync::atomic::AtomicI64,
    /// No compaction pass before this time (ms): the last one failed.
    clean_retry_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

/// Maps a storage error to the Kafka error code a client should see.
pub(crate) fn error_code(err: &LogError) -> ResponseError {
    match err {
        LogError::Io { .. } | LogError::Failed { .. } | LogError::Corrupt { .. } => ResponseError::KafkaStorageError,
        LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Batch(e) => crate::error::batch_error_code(e),
        LogError::CleanAborted(_) => ResponseError::UnknownServerError,
    }
}

impl Partition {
    /// Opens (recovering) the partition's log; a log that cannot be opened leaves the partition
    /// offline with the reason, and the rest of the broker serving.
    pub(crate) fn open(fs: Arc<dyn Fs>, dir: &Path, topic: &str, index: i32, config: LogConfig) -> Partition {
        let mut producers = ProducerState::default();
        let opened = Log::open(fs.clone(), dir, config, now_ms()).and_then(|(mut log, report)| {
            if report.truncated_bytes > 0 || !report.rebuilt_indexes.is_empty() {
                tracing::warn!(topic, partition = index, ?report, "recovered partition after an unclean shutdown");
            }
            producers = load_producer_state(&*fs, dir, &mut log)?;
            Ok(log)
        });
        let state = match opened {
            Ok(log) => State::Online(log),
            Err(e) => {
                tracing::error!(topic, partition = index, error = %e, "partition is offline: its log could not be opened");
                State::Offline(e.to_string())
            }
        };
        let end = producers.end_offset;
        let (hw, durable) = match &state {
            State::Online(log) => (log.high_watermark(), log.durable_offset()),
            _ => (0, 0),
        };
        Partition {
            topic: topic.to_string(),
            index,
            state: Mutex::new(state),
            visible: watch::Sender::new(hw),
            durable: watch::Sender::new(Durable { offset: durable, failed: false }),
            syncing: AtomicBool::new(false),
            appends: Mutex::default(),
            writing: AtomicBool::new(false),
            producers: Mutex::new(producers),
            snapshot: Mutex::new((end, now_ms())),
            fs,
            dir: dir.to_path_buf(),
            compaction: Mutex::new(None),
            cleaned_up_to: std::sync::atomic::AtomicU64::new(0),
            tombstones_due: std::sync::atomic::AtomicI64::new(i64::MAX),
            clean_retry_at: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Sets (or clears) the partition's compaction settings.
    pub(crate) fn set_compaction(&self, config: Option<CompactionConfig>) {
        *self.compaction.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// One compaction pass if one is due: plan under the lock, clean without it, swap under it.
    pub fn compact(&self, now: i64) -> Option<CleanReport> {
        let config = (*self.compaction.lock().unwrap_or_else(|p| p.into_inner()))?;
        if now < self.clean_retry_at.load(Ordering::Relaxed) {
            return None;
        }
        let (plan, up_to, aborted) = {
            let state = self.lock();
            let State::Online(log) = &*state else { return None };
            let producers = self.producers();
            let stable =
                producers.first_unstable_offset().map_or(log.high_watermark(), |f| f.min(log.high_watermark()));
            let up_to = crate::cleaner::due(
                &log.segment_summaries(),
                stable,
                self.cleaned_up_to.load(Ordering::Relaxed),
                Some(self.tombstones_due.load(Ordering::Relaxed)).filter(|t| *t != i64::MAX),
                &config,
                now,
            )?;
            let aborted: Vec<(i64, u64, u64)> =
                producers.aborted.iter().map(|a| (a.producer_id, a.first_offset, a.last_offset)).collect();
            (log.plan_clean(up_to)?, up_to, aborted)
        };
        let (cleaned, report) = match crate::cleaner::clean(&plan, &config, &aborted, now) {
            Ok(r) => r,
            Err(e) => {
                // The old segments stay as they were; try again later.
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                    retry_in_ms = CLEAN_RETRY_MS, "compaction pass failed; the segments are kept as they are");
                self.clean_retry_at.store(now.saturating_add(CLEAN_RETRY_MS), Ordering::Relaxed);
                return None;
            }
        };
        let mut state = self.lock();
        let State::Online(log) = &mut *state else { return None };
        match log.swap_cleaned(cleaned, now) {
            Ok(true) => {
                // A pass that kept nothing of the first segments moved the log start.
                self.producers().truncate_below(log.log_start_offset());
                self.cleaned_up_to.store(up_to, Ordering::Relaxed);
                self.tombstones_due.store(report.tombstones_due_ms.unwrap_or(i64::MAX), Ordering::Relaxed);
                tracing::debug!(topic = %self.topic, partition = self.index, ?report, "compacted");
                Some(report)
            }
            Ok(false) => None,
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "compaction swap failed");
                None
            }
        }
    }

    fn producers(&self) -> MutexGuard<'_, ProducerState> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Log start, high watermark and last stable offset (no open transaction starts below it).
    pub fn stable_offsets(&self) -> Result<(u64, u64, u64), ResponseError> {
        let state = self.lock();
        let State::Online(log) = &*state else { return Err(ResponseError::KafkaStorageError) };
        let hw = log.high_watermark();
        let lso = self.producers().first_unstable_offset().map_or(hw, |f| f.min(hw));
        Ok((log.log_start_offset(), hw, lso))
    }

    /// Writes a transaction marker for `producer_id` (commit or abort) and returns where.
    pub fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> oneshot::Receiver<AppendResult> {
        let now = now_ms();
        let bytes = freshet_log::batch::encode_marker(producer_id, epoch, commit, now);
        let header = freshet_log::batch::validate(&bytes).expect("a marker is a valid batch");
        self.enqueue(AppendJob {
            batch: BytesMut::from(&bytes[..]),
            header,
            now,
            marker: Some(commit),
            done: oneshot::channel().0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> Result<T, LogError>) -> Result<T, ResponseError> {
        match &mut *self.lock() {
            State::Online(log) => f(log).map_err(|e| error_code(&e)),
            State::Offline(_) | State::Closed => Err(ResponseError::KafkaStorageError),
        }
    }

    /// Why the partition is offline, if it is.
    pub fn offline_reason(&self) -> Option<String> {
        match &*self.lock() {
            State::Offline(reason) => Some(reason.clone()),
            State::Closed => Some("partition is closed".into()),
            State::Online(log) => log.failure().map(str::to_string),
        }
    }

    /// Whether the log is open (it may still refuse writes after a failed fsync).
    pub fn is_online(&self) -> bool {
        matches!(&*self.lock(), State::Online(_))
    }

    /// Log start offset and high watermark.
    pub fn offsets(&self) -> Result<(u64, u64), ResponseError> {
        self.with_log(|log| Ok((log.log_start_offset(), log.high_watermark())))
    }

    /// A receiver that sees the high watermark move.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// Queues a validated batch for the partition's writer and returns where it landed, once it
    /// is written (not yet durable: see [`Appended::needs_sync`] and [`Partition::wait_durable`]).
    ///
    /// Batches are appended in the order they are queued, by a writer running on the blocking
    /// pool, so the async workers never wait on the disk. A connection queues the batches of its
    /// requests in arrival order, so its writes to a partition keep that order.
    pub fn append(self: &Arc<Self>, batch: BytesMut, header: BatchHeader, now: i64) -> oneshot::Receiver<AppendResult> {
        self.enqueue(AppendJob { batch, header, now, marker: None, done: oneshot::channel().0 })
    }

    fn enqueue(self: &Arc<Self>, mut job: AppendJob) -> oneshot::Receiver<AppendResult> {
        let (done, rx) = oneshot::channel();
        job.done = done;
        self.appends.lock().unwrap_or_else(|p| p.into_inner()).push_back(job);
        if !self.writing.swap(true, Ordering::AcqRel) {
            let partition = self.clone();
            tokio::task::spawn_blocking(move || partition.write_loop());
        }
        rx
    }

    /// Appends queued batches until the queue is empty.
    fn write_loop(self: Arc<Self>) {
        loop {
            let jobs: Vec<AppendJob> =
                std::mem::take(&mut *self.appends.lock().unwrap_or_else(|p| p.into_inner())).into();
            if jobs.is_empty() {
                self.writing.store(false, Ordering::Release);
                // A job may have been queued between the take above and the store.
                let more = !self.appends.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                if more && !self.writing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            }
            let mut results = Vec::with_capacity(jobs.len());
            let mut markers_written = false;
            // (whether an fsync must follow, the high watermark to publish now if writes are
            // readable before they are durable)
            let published = {
                let mut state = self.lock();
                match &mut *state {
                    State::Online(log) => {
                        let mut producers = self.producers();
                        for mut job in jobs {
                            // A transaction marker is always made durable before the coordinator
                            // completes the transaction, whatever the topic's flush.messages.
                            let sync = log.config().sync_writes() || job.marker.is_some();
                            let appended = |info, start| Appended { info, log_start_offset: start, needs_sync: sync };
                            let check = if job.marker.is_some() { Check::Append } else { producers.check(&job.header) };
                            let r = match check {
                                Check::Refuse(code, why) => Err((code, why)),
                                Check::Duplicate(b) => {
                                    tracing::debug!(topic = %self.topic, partition = self.index, producer = job.header.producer_id, sequence = job.header.base_sequence, offset = b.base_offset, "duplicate batch: answered with its first offset");
                                    Ok(appended(
                                        AppendInfo {
                                            base_offset: b.base_offset,
                                            last_offset: b.last_offset,
                                            log_append_time: None,
                                            size: 0,
                                        },
                                        log.log_start_offset(),
                                    ))
                                }
                                Check::Append => match log.append(&mut job.batch, &job.header, job.now) {
                                    Ok(info) => {
                                        match job.marker {
                                            Some(commit) => {
                                                markers_written = true;
                                                producers.on_marker(
                                                    job.header.producer_id,
                                                    job.header.producer_epoch,
                                                    commit,
                                                    info.base_offset,
                                                )
                                            }
                                            None => producers.on_batch(&job.header, info.base_offset),
                                        }
                                        Ok(appended(info, log.log_start_offset()))
                                    }
                                    Err(e) => Err((error_code(&e), e.to_string())),
                                },
                            };
                            results.push((job.done, r));
                        }
                        let sync_writes = log.config().sync_writes();
                        Some((sync_writes || markers_written, (!sync_writes).then(|| log.high_watermark())))
                    }
                    State::Offline(reason) => {
                        let reason = reason.clone();
                        results.extend(
                            jobs.into_iter().map(|j| (j.done, Err((ResponseError::KafkaStorageError, reason.clone())))),
                        );
                        None
                    }
                    State::Closed => {
                        results.extend(
                            jobs.into_iter().map(|j| {
                                (j.done, Err((ResponseError::KafkaStorageError, "partition is closed".into())))
                            }),
                        );
                        None
                    }
                }
            };
            for (done, r) in results {
                let _ = done.send(r);
            }
            if let Some((_, Some(hw))) = published {
                self.visible.send_replace(hw);
            }
            match published {
                // Run the group-commit fsync on this thread (one hand-off less on the acks=all
                // path), handing the writer role to a new thread meanwhile.
                Some((true, _)) if !self.syncing.swap(true, Ordering::AcqRel) => {
                    self.writing.store(false, Ordering::Release);
                    let more = !self.appends.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                    if more && !self.writing.swap(true, Ordering::AcqRel) {
                        let partition = self.clone();
                        tokio::task::spawn_blocking(move || partition.write_loop());
                    }
                    self.sync_loop();
                    return;
                }
                // A sync is running: it covers these appends. Without one, nothing to do.
                _ => {}
            }
        }
    }

    /// Syncs until nothing appended is left unsynced. The caller owns the `syncing` flag.
    fn sync_loop(&self) {
        loop {
            let ticket = match &*self.lock() {
                State::Online(log) => log.begin_sync(),
                _ => None,
            };
            let Some(ticket) = ticket else {
                self.syncing.store(false, Ordering::Release);
                // An append may have slipped in between begin_sync and the store above.
                let more = matches!(&*self.lock(), State::Online(log) if log.begin_sync().is_some());
                if more && !self.syncing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            };
            let result = ticket.sync();
            let outcome = match &mut *self.lock() {
                State::Online(log) => {
                    let r = log.finish_sync(ticket, result, now_ms());
                    Some((r, log.high_watermark()))
                }
                _ => None,
            };
            match outcome {
                Some((Ok(durable), hw)) => {
                    self.durable.send_replace(Durable { offset: durable, failed: false });
                    self.visible.send_replace(hw);
                }
                Some((Err(e), _)) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed; partition refuses writes");
                    self.durable.send_modify(|d| d.failed = true);
                    self.syncing.store(false, Ordering::Release);
                    return;
                }
                None => {
                    self.durable.send_modify(|d| d.failed = true);
                    self.syncing.store(false, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Waits until `offset` (exclusive end of a batch) is durable.
    pub async fn wait_durable(&self, offset: u64, timeout: Duration) -> Result<(), ResponseError> {
        let mut rx = self.durable.subscribe();
        let wait = async move { rx.wait_for(|d| d.offset >= offset || d.failed).await.map(|d| d.offset >= offset) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(ResponseError::KafkaStorageError),
            Err(_) => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Reads whole batches from `offset`, at most `max_bytes` unless the first batch alone is
    /// larger and `min_one_batch` is set. A `read_committed` read stops at the last stable
    /// offset and lists the aborted transactions it covers. The file I/O happens outside the
    /// partition lock.
    pub fn read(
        &self,
        mut offset: u64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<ReadOutput, ResponseError> {
        loop {
            let (start, hw, lso, plan) = {
                let mut state = self.lock();
                let State::Online(log) = &mut *state else { return Err(ResponseError::KafkaStorageError) };
                let hw = log.high_watermark();
                let lso = self.producers().first_unstable_offset().map_or(hw, |f| f.min(hw));
                let upper = if read_committed { lso } else { hw };
                let plan = log.plan_read(offset, upper).map_err(|e| error_code(&e))?;
                (log.log_start_offset(), hw, lso, plan)
            };
            let output = |records: Bytes, next: u64| ReadOutput {
                aborted: if read_committed && next > offset {
                    self.producers().aborted_between(offset, next)
                } else {
                    vec![]
                },
                records,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: start,
            };
            let plan = match plan {
                ReadStart::AtEnd => return Ok(output(Bytes::new(), offset)),
                ReadStart::Plan(plan) => plan,
            };
            match plan.execute(max_bytes, min_one_batch).map_err(|e| error_code(&e))? {
                ReadChunk::Data { bytes, next_offset } => return Ok(output(bytes, next_offset)),
                ReadChunk::NextSegment(next) => offset = next,
                ReadChunk::AtEnd => return Ok(output(Bytes::new(), offset)),
            }
        }
    }

    pub fn find_batch_by_timestamp(&self, ts: i64) -> Result<Option<Bytes>, ResponseError> {
        self.with_log(|log| log.find_batch_by_timestamp(ts))
    }

    pub fn find_batch_with_max_timestamp(&self) -> Result<Option<Bytes>, ResponseError> {
        self.with_log(|log| log.find_batch_with_max_timestamp())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1: the high watermark).
    pub fn delete_records(&self, offset: i64) -> Result<u64, ResponseError> {
        self.with_log(|log| {
            let target = if offset == -1 { log.high_watermark() } else { offset as u64 };
            log.delete_records_before(target, now_ms())
        })
    }

    pub(crate) fn set_config(self: &Arc<Self>, config: LogConfig, now: i64) {
        let hw = match &mut *self.lock() {
            State::Online(log) => {
                // Switching to flush.messages=1 must not move the high watermark back.
                if config.sync_writes() && !log.config().sync_writes() {
                    if let Err(e) = log.flush(now) {
                        tracing::error!(topic = %self.topic, partition = self.index, error = %e, "flush failed");
                    }
                }
                log.set_config(config);
                log.high_watermark()
            }
            _ => return,
        };
        self.visible.send_if_modified(|v| {
            let changed = *v < hw;
            *v = (*v).max(hw);
            changed
        });
    }

    /// Retention, and an fsync if a relaxed-flush log is due.
    pub(crate) fn maintain(&self, now: i64) {
        let mut state = self.lock();
        let State::Online(log) = &mut *state else { return };
        match log.apply_retention(now) {
            Ok(r) if r.deleted_segments > 0 => self.producers().truncate_below(r.log_start_offset),
            Ok(_) => {}
            Err(e) => tracing::error!(topic = %self.topic, partition = self.index, error = %e, "retention failed"),
        }
        let (snap_end, snap_ms) = *self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if log.next_offset() != snap_end && now - snap_ms >= SNAPSHOT_INTERVAL_MS {
            self.write_snapshot(log.next_offset(), now);
        }
        if !log.config().sync_writes() && log.flush_due(now) {
            match log.flush(now) {
                Ok(d) => {
                    self.durable.send_replace(Durable { offset: d, failed: false });
                }
                Err(e) => tracing::error!(topic = %self.topic, partition = self.index, error = %e, "flush failed"),
            }
        }
    }

    /// Writes the producer state snapshot (it reflects the log below `end`).
    fn write_snapshot(&self, end: u64, now: i64) {
        let mut producers = self.producers().clone();
        producers.end_offset = end;
        let path = self.dir.join(PRODUCER_SNAPSHOT);
        match freshet_log::fs::write_atomic(&*self.fs, &path, &producers.to_bytes()) {
            Ok(()) => *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = (end, now),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not write the producer state snapshot"),
        }
    }

    /// Flushes and closes the log; the partition answers KAFKA_STORAGE_ERROR afterwards.
    pub(crate) fn close(&self, now: i64) {
        let mut state = self.lock();
        if let State::Online(log) = std::mem::replace(&mut *state, State::Closed) {
            let end = log.next_offset();
            self.write_snapshot(end, now);
            match log.close(now) {
                Ok(()) => {
                    self.durable.send_replace(Durable { offset: end, failed: true });
                    return;
                }
                Err(e) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "closing the log failed")
                }
            }
        }
        self.durable.send_modify(|d| d.failed = true);
    }
}

/// Loads the producer state: the snapshot, then every batch written after it.
fn load_producer_state(fs: &dyn Fs, dir: &Path, log: &mut Log) -> Result<ProducerState, LogError> {
    let path = dir.join(PRODUCER_SNAPSHOT);
    let snapshot = fs
        .exists(&path)
        .then(|| freshet_log::fs::read_all(fs, &path).ok())
        .flatten()
        .and_then(|b| ProducerState::from_bytes(&b));
    let mut state = match snapshot {
        Some(s) if s.end_offset <= log.next_offset() && s.end_offset >= log.log_start_offset() => s,
        Some(s) => {
            // The snapshot does not fit the log (its unflushed tail was lost, or retention passed
            // it). Remove it now: once the log grows past its end again it would seem to fit.
            tracing::info!(dir = %dir.display(), snapshot_end = s.end_offset, log_end = log.next_offset(),
                "discarding a producer state snapshot that does not match the log");
            fs.remove_file(&path).map_err(|e| LogError::Io { path: path.clone(), source: e })?;
            ProducerState::default()
        }
        None => ProducerState::default(),
    };
    let mut offset = state.end_offset.max(log.log_start_offset());
    let end = log.next_offset();
    let mut replayed = 0u64;
    while offset < end {
        match log.read(offset, 4 << 20, true)? {
            ReadChunk::Data { bytes, next_offset } => {
                let mut rest = &bytes[..];
                while let Some(size) = freshet_log::batch::peek_size(rest).filter(|s| *s <= rest.len()) {
                    let one = &rest[..size];
                    rest = &rest[size..];
                    let Ok(h) = BatchHeader::parse(one) else { break };
                    let base = h.base_offset as u64;
                    if h.is_control() {
                        let commit = freshet_log::batch::records(one)
                            .and_then(|r| r.first().and_then(|r| r.key).and_then(crate::producers::marker_is_commit));
                        if let Some(commit) = commit {
                            state.on_marker(h.producer_id, h.producer_epoch, commit, base);
                        }
                    } else {
                        state.on_batch(&h, base);
                    }
                    replayed += 1;
                }
                if next_offset <= offset {
                    break;
                }
                offset = next_offset;
            }
            ReadChunk::NextSegment(next) => offset = next,
            ReadChunk::AtEnd => break,
        }
    }
    state.end_offset = end;
    if replayed > 0 {
        tracing::debug!(dir = %dir.display(), batches = replayed, "rebuilt producer state from the log");
    }
    Ok(state)
}
