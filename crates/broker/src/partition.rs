//! One partition: its log behind a mutex, plus the signals that drive group commit and long
//! polling.
//!
//! Group commit: an append that needs durability calls [`Partition::schedule_sync`]; if no sync
//! is running for this partition, one starts on a blocking thread and keeps syncing until
//! nothing is left, so every append that arrived while an fsync was running shares the next one.
//! Waiters watch the `durable` channel.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use freshet_log::fs::Fs;
use freshet_log::{AppendInfo, BatchHeader, Log, LogConfig, LogError, ReadChunk, ReadStart};
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, watch};

use crate::broker::now_ms;

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
    pub log_start_offset: u64,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub info: AppendInfo,
    pub log_start_offset: u64,
    /// The write is durable (and readable) only after the next fsync (`flush.messages=1`).
    pub needs_sync: bool,
}

/// The outcome of an append: where it landed, or the Kafka error and why.
pub type AppendResult = Result<Appended, (ResponseError, String)>;

struct AppendJob {
    batch: BytesMut,
    header: BatchHeader,
    now: i64,
    done: oneshot::Sender<AppendResult>,
}

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
    }
}

impl Partition {
    /// Opens (recovering) the partition's log; a log that cannot be opened leaves the partition
    /// offline with the reason, and the rest of the broker serving.
    pub(crate) fn open(fs: Arc<dyn Fs>, dir: &Path, topic: &str, index: i32, config: LogConfig) -> Partition {
        let state = match Log::open(fs, dir, config, now_ms()) {
            Ok((log, report)) => {
                if report.truncated_bytes > 0 || !report.rebuilt_indexes.is_empty() {
                    tracing::warn!(topic, partition = index, ?report, "recovered partition after an unclean shutdown");
                }
                State::Online(log)
            }
            Err(e) => {
                tracing::error!(topic, partition = index, error = %e, "partition is offline: its log could not be opened");
                State::Offline(e.to_string())
            }
        };
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
        }
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
        let (done, rx) = oneshot::channel();
        self.appends.lock().unwrap_or_else(|p| p.into_inner()).push_back(AppendJob { batch, header, now, done });
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
            let published = {
                let mut state = self.lock();
                match &mut *state {
                    State::Online(log) => {
                        for mut job in jobs {
                            let r = log
                                .append(&mut job.batch, &job.header, job.now)
                                .map(|info| Appended {
                                    info,
                                    log_start_offset: log.log_start_offset(),
                                    needs_sync: log.config().sync_writes(),
                                })
                                .map_err(|e| (error_code(&e), e.to_string()));
                            results.push((job.done, r));
                        }
                        Some((log.config().sync_writes(), log.high_watermark()))
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
                // A sync is running: it covers these appends.
                Some((true, _)) => {}
                Some((false, hw)) => {
                    self.visible.send_replace(hw);
                }
                None => {}
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
    /// larger and `min_one_batch` is set. The file I/O happens outside the partition lock.
    pub fn read(&self, mut offset: u64, max_bytes: usize, min_one_batch: bool) -> Result<ReadOutput, ResponseError> {
        loop {
            let (start, hw, plan) = self.with_log(|log| {
                let hw = log.high_watermark();
                Ok((log.log_start_offset(), hw, log.plan_read(offset, hw)?))
            })?;
            let empty = || ReadOutput { records: Bytes::new(), high_watermark: hw, log_start_offset: start };
            let plan = match plan {
                ReadStart::AtEnd => return Ok(empty()),
                ReadStart::Plan(plan) => plan,
            };
            match plan.execute(max_bytes, min_one_batch).map_err(|e| error_code(&e))? {
                ReadChunk::Data { bytes, .. } => {
                    return Ok(ReadOutput { records: bytes, high_watermark: hw, log_start_offset: start })
                }
                ReadChunk::NextSegment(next) => offset = next,
                ReadChunk::AtEnd => return Ok(empty()),
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
        if let Err(e) = log.apply_retention(now) {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "retention failed");
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

    /// Flushes and closes the log; the partition answers KAFKA_STORAGE_ERROR afterwards.
    pub(crate) fn close(&self, now: i64) {
        let mut state = self.lock();
        if let State::Online(log) = std::mem::replace(&mut *state, State::Closed) {
            let end = log.next_offset();
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
