//! Producer ids and the transaction coordinator.
//!
//! Producer ids come from blocks reserved durably in `producer-ids` (a restart never hands out
//! an id twice). A transactional id maps to a producer id and epoch and to the state of its
//! current transaction, kept in memory and in the internal topic `__transaction_state` (one
//! record per change, keyed by transactional id; the last one wins).
//!
//! Ending a transaction: the state becomes PrepareCommit/PrepareAbort (durable), a marker goes to
//! every partition the transaction wrote (durable), pending offset commits are applied (commit)
//! or dropped (abort), and the state becomes CompleteCommit/CompleteAbort. A transaction found
//! half-ended at startup is finished the same way; one open longer than its timeout is aborted
//! and its producer fenced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use freshet_log::batch::{self, SimpleRecord};
use freshet_log::fs::{self, Fs};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

use crate::broker::{now_ms, Broker};
use crate::groups::{Committed, TopicPartition};
use crate::partition::Partition;

/// Name of the internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Producer ids reserved per write of `producer-ids`.
const ID_BLOCK: i64 = 1_000;

/// Longest transaction timeout a producer may ask for (Kafka's transaction.max.timeout.ms).
pub const MAX_TXN_TIMEOUT_MS: i32 = 900_000;

/// Hands out producer ids, reserving them in blocks in a file.
pub struct ProducerIds {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    /// (next id, end of the reserved block)
    next: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(fs: Arc<dyn Fs>, path: PathBuf) -> std::io::Result<ProducerIds> {
        let start = if fs.exists(&path) {
            let text = String::from_utf8_lossy(&fs::read_all(&*fs, &path)?).trim().to_string();
            text.parse()
                .map_err(|_| std::io::Error::other(format!("{} holds '{text}', not a producer id", path.display())))?
        } else {
            0
        };
        Ok(ProducerIds { fs, path, next: Mutex::new((start, start)) })
    }

    /// A producer id never handed out before.
    pub fn next(&self) -> Result<i64, ResponseError> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.0 == next.1 {
            let end = next.1 + ID_BLOCK;
            fs::write_atomic(&*self.fs, &self.path, end.to_string().as_bytes()).map_err(|e| {
                tracing::error!(error = %e, "cannot reserve producer ids");
                ResponseError::KafkaStorageError
            })?;
            next.1 = end;
        }
        let id = next.0;
        next.0 += 1;
        Ok(id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// A transactional id's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// Offsets committed in the transaction, by group; applied when it commits.
    pub offsets: BTreeMap<String, Vec<(TopicPartition, Committed)>>,
    pub started_ms: i64,
    pub updated_ms: i64,
}

pub struct TxnCoordinator {
    log: Arc<Partition>,
    pub ids: ProducerIds,
    txns: Mutex<HashMap<String, TxnMeta>>,
    /// One lock per transactional id: its operations run one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn err(code: ResponseError, why: impl Into<String>) -> (ResponseError, String) {
    (code, why.into())
}

pub type TxnResult<T> = Result<T, (ResponseError, String)>;

impl TxnCoordinator {
    /// Loads every transactional id's last state from the internal topic.
    pub fn load(log: Arc<Partition>, ids: ProducerIds) -> Result<TxnCoordinator, String> {
        let mut txns: HashMap<String, TxnMeta> = HashMap::new();
        let (start, end) = log.offsets().map_err(|e| format!("{e:?}"))?;
        let mut at = start;
        while at < end {
            let out = log.read(at, 4 << 20, true, false).map_err(|e| format!("reading transaction state: {e:?}"))?;
            if out.records.is_empty() {
                break;
            }
            let mut rest = &out.records[..];
            while let Some(size) = batch::peek_size(rest).filter(|s| *s <= rest.len()) {
                let one = &rest[..size];
                rest = &rest[size..];
                at = batch::BatchHeader::parse(one).map_err(|e| e.to_string())?.next_offset() as u64;
                for r in batch::records(one).ok_or("a transaction state batch is compressed or malformed")? {
                    let Some(key) = r.key.and_then(|k| String::from_utf8(k.to_vec()).ok()) else { continue };
                    match r.value.and_then(|v| serde_json::from_slice::<TxnMeta>(v).ok()) {
                        Some(meta) => txns.insert(key, meta),
                        None => txns.remove(&key),
                    };
                }
            }
        }
        tracing::info!(transactional_ids = txns.len(), "loaded transaction state");
        Ok(TxnCoordinator { log, ids, txns: Mutex::new(txns), locks: Mutex::default() })
    }

    fn txns(&self) -> MutexGuard<'_, HashMap<String, TxnMeta>> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().clone()
    }

    /// Writes a transactional id's new state and waits until it is durable.
    async fn persist(&self, meta: TxnMeta) -> TxnResult<()> {
        let record = SimpleRecord {
            timestamp: now_ms(),
            key: Some(meta.transactional_id.as_bytes().to_vec().into()),
            value: Some(serde_json::to_vec(&meta).expect("serializable").into()),
            headers: vec![],
        };
        let bytes = batch::encode_batch(&[record]);
        let header = batch::validate(&bytes).map_err(|e| err(ResponseError::UnknownServerError, e.to_string()))?;
        let appended = self
            .log
            .append(BytesMut::from(&bytes[..]), header, now_ms())
            .await
            .map_err(|_| err(ResponseError::CoordinatorNotAvailable, "the transaction log writer stopped"))??;
        if appended.needs_sync {
            self.log
                .wait_durable(appended.info.last_offset + 1, Duration::from_secs(30))
                .await
                .map_err(|e| err(e, "the transaction state could not be made durable"))?;
        }
        self.txns().insert(meta.transactional_id.clone(), meta);
        Ok(())
    }

    /// Whether `producer_id`/`epoch` may write transactional data to this partition now.
    pub fn check_write(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> TxnResult<()> {
        let txns = self.txns();
        let Some(meta) = txns.values().find(|m| m.producer_id == producer_id) else {
            return Err(err(
                ResponseError::InvalidProducerIdMapping,
                format!("producer {producer_id} has no transactional id"),
            ));
        };
        if epoch < meta.epoch {
            return Err(err(
                ResponseError::ProducerFenced,
                format!("producer epoch {epoch} is fenced by {}", meta.epoch),
            ));
        }
        if meta.state != TxnState::Ongoing || !meta.partitions.contains(&(topic.to_string(), partition)) {
            return Err(err(
                ResponseError::InvalidTxnState,
                format!("{topic}-{partition} was not added to the transaction of '{}'", meta.transactional_id),
            ));
        }
        Ok(())
    }

    /// Checks the producer id and epoch a request names against the transactional id's.
    fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> TxnResult<()> {
        if meta.producer_id != producer_id {
            return Err(err(ResponseError::InvalidProducerIdMapping, "the producer id is not this transactional id's"));
        }
        if epoch < meta.epoch {
            return Err(err(
                ResponseError::ProducerFenced,
                format!("producer epoch {epoch} is fenced by {}", meta.epoch),
            ));
        }
        if epoch > meta.epoch {
            return Err(err(
                ResponseError::InvalidProducerEpoch,
                format!("producer epoch {epoch} is not {}", meta.epoch),
            ));
        }
        Ok(())
    }

    /// InitProducerId for a transactional id: its producer id with a new epoch, after ending
    /// (aborting) any transaction the previous incarnation left open.
    pub async fn init(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout_ms: i32,
        given: Option<(i64, i16)>,
    ) -> TxnResult<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > MAX_TXN_TIMEOUT_MS {
            return Err(err(
                ResponseError::InvalidTransactionTimeout,
                format!("transaction timeout {timeout_ms} ms is not in 1..={MAX_TXN_TIMEOUT_MS}"),
            ));
        }
        let lock = self.lock_for(transactional_id);
        let _guard = lock.lock().await;
        let existing = self.txns().get(transactional_id).cloned();
        let now = now_ms();
        let mut meta = match existing {
            None => TxnMeta {
                transactional_id: transactional_id.to_string(),
                producer_id: self.ids.next().map_err(|e| err(e, "no producer id"))?,
                epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                offsets: BTreeMap::new(),
                started_ms: now,
                updated_ms: now,
            },
            Some(mut meta) => {
                if let Some((pid, epoch)) = given {
                    if pid != meta.producer_id || epoch != meta.epoch {
                        return Err(err(
                            ResponseError::InvalidProducerEpoch,
                            "the producer id and epoch given are not the current ones",
                        ));
                    }
                }
                // Finish what the previous incarnation left: a half-ended transaction completes
                // as it was decided; an open one is aborted.
                match meta.state {
                    TxnState::PrepareCommit => meta = self.complete(broker, meta, true).await?,
                    TxnState::Ongoing | TxnState::PrepareAbort => {
                        meta.epoch = meta.epoch.saturating_add(1);
                        meta = self.complete(broker, meta, false).await?;
                    }
                    _ => {}
                }
                if meta.epoch >= i16::MAX - 1 {
                    meta.producer_id = self.ids.next().map_err(|e| err(e, "no producer id"))?;
                    meta.epoch = 0;
                } else {
                    meta.epoch += 1;
                }
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.offsets.clear();
                meta.timeout_ms = timeout_ms;
                meta.updated_ms = now;
                meta
            }
        };
        meta.updated_ms = now;
        let (pid, epoch) = (meta.producer_id, meta.epoch);
        self.persist(meta).await?;
        Ok((pid, epoch))
    }

    /// AddPartitionsToTxn.
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> TxnResult<()> {
        let lock = self.lock_for(transactional_id);
        let _guard = lock.lock().await;
        let mut meta = self.ready_for_more(transactional_id, producer_id, epoch)?;
        let before = meta.partitions.len();
        meta.partitions.extend(partitions);
        if meta.state == TxnState::Ongoing && meta.partitions.len() == before {
            return Ok(());
        }
        self.begin(&mut meta);
        self.persist(meta).await
    }

    /// AddOffsetsToTxn: the transaction will commit offsets for `group`.
    pub async fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> TxnResult<()> {
        let lock = self.lock_for(transactional_id);
        let _guard = lock.lock().await;
        let mut meta = self.ready_for_more(transactional_id, producer_id, epoch)?;
        if meta.state == TxnState::Ongoing && meta.offsets.contains_key(group) {
            return Ok(());
        }
        meta.offsets.entry(group.to_string()).or_default();
        self.begin(&mut meta);
        self.persist(meta).await
    }

    /// TxnOffsetCommit: offsets that become committed when the transaction commits.
    pub async fn commit_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        entries: Vec<(TopicPartition, Committed)>,
    ) -> TxnResult<()> {
        let lock = self.lock_for(transactional_id);
        let _guard = lock.lock().await;
        let mut meta = self
            .txns()
            .get(transactional_id)
            .cloned()
            .ok_or_else(|| err(ResponseError::InvalidProducerIdMapping, "unknown transactional id"))?;
        Self::check_producer(&meta, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.offsets.contains_key(group) {
            return Err(err(
                ResponseError::InvalidTxnState,
                format!("group '{group}' was not added to the transaction"),
            ));
        }
        let pending = meta.offsets.get_mut(group).expect("checked");
        for (tp, c) in entries {
            pending.retain(|(t, _)| *t != tp);
            pending.push((tp, c));
        }
        meta.updated_ms = now_ms();
        self.persist(meta).await
    }

    /// EndTxn.
    pub async fn end(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> TxnResult<()> {
        let lock = self.lock_for(transactional_id);
        let _guard = lock.lock().await;
        let meta = self
            .txns()
            .get(transactional_id)
            .cloned()
            .ok_or_else(|| err(ResponseError::InvalidProducerIdMapping, "unknown transactional id"))?;
        Self::check_producer(&meta, producer_id, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                self.complete(broker, meta, commit).await?;
                Ok(())
            }
            // A retried EndTxn whose first attempt went through.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            // Nothing was added: nothing to end.
            (TxnState::Empty, _) => Ok(()),
            (state, _) => Err(err(
                ResponseError::InvalidTxnState,
                format!("cannot {} a transaction in state {state:?}", if commit { "commit" } else { "abort" }),
            )),
        }
    }

    fn ready_for_more(&self, transactional_id: &str, producer_id: i64, epoch: i16) -> TxnResult<TxnMeta> {
        let meta = self
            .txns()
            .get(transactional_id)
            .cloned()
            .ok_or_else(|| err(ResponseError::InvalidProducerIdMapping, "unknown transactional id"))?;
        Self::check_producer(&meta, producer_id, epoch)?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(err(ResponseError::ConcurrentTransactions, "the previous transaction is still ending"))
            }
            _ => Ok(meta),
        }
    }

    fn begin(&self, meta: &mut TxnMeta) {
        let now = now_ms();
        if meta.state != TxnState::Ongoing {
            meta.state = TxnState::Ongoing;
            meta.started_ms = now;
        }
        meta.updated_ms = now;
    }

    /// Ends a transaction: prepare (durable), markers (durable), offsets, complete (durable).
    async fn complete(&self, broker: &Broker, mut meta: TxnMeta, commit: bool) -> TxnResult<TxnMeta> {
        meta.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        meta.updated_ms = now_ms();
        self.persist(meta.clone()).await?;
        let mut waits = Vec::new();
        for (topic, index) in &meta.partitions {
            let Some(p) = broker.topic(topic).and_then(|t| t.partition(*index)) else { continue };
            let rx = p.append_marker(meta.producer_id, meta.epoch, commit);
            waits.push((p, rx));
        }
        for (p, rx) in waits {
            let appended =
                rx.await.map_err(|_| err(ResponseError::CoordinatorNotAvailable, "a partition writer stopped"))??;
            if appended.needs_sync {
                p.wait_durable(appended.info.last_offset + 1, Duration::from_secs(30))
                    .await
                    .map_err(|e| err(e, "a transaction marker could not be made durable"))?;
            }
        }
        if commit {
            for (group, entries) in &meta.offsets {
                if !entries.is_empty() {
                    broker
                        .groups()
                        .offsets
                        .commit(group, entries.clone())
                        .await
                        .map_err(|e| err(e, "the transaction's offsets could not be committed"))?;
                }
            }
        }
        meta.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        meta.partitions.clear();
        meta.offsets.clear();
        meta.updated_ms = now_ms();
        self.persist(meta.clone()).await?;
        Ok(meta)
    }

    /// Whether a group has offsets waiting in an open transaction (OffsetFetch require_stable).
    pub fn has_pending_offsets(&self, group: &str) -> bool {
        self.txns()
            .values()
            .any(|m| m.state == TxnState::Ongoing && m.offsets.get(group).is_some_and(|o| !o.is_empty()))
    }

    /// Finishes transactions left half-ended at startup; aborts (and fences) expired ones.
    ///
    /// The scan only nominates candidates: what to do is decided again under the transactional
    /// id's lock, since the transaction may have ended (or a new one begun) meanwhile.
    pub async fn tick(&self, broker: &Broker) {
        let now = now_ms();
        let candidates: Vec<String> = self
            .txns()
            .values()
            .filter(|m| Self::due_action(m, now).is_some())
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in candidates {
            let lock = self.lock_for(&id);
            let _guard = lock.lock().await;
            let Some(mut meta) = self.txns().get(&id).cloned() else { continue };
            let Some(commit) = Self::due_action(&meta, now_ms()) else { continue };
            if meta.state == TxnState::Ongoing {
                // Timed out: abort with a new epoch, so the producer is fenced.
                tracing::info!(transactional_id = %id, "transaction timed out; aborting it");
                meta.epoch = meta.epoch.saturating_add(1);
            }
            if let Err((code, why)) = self.complete(broker, meta, commit).await {
                tracing::warn!(transactional_id = %id, ?code, %why, "could not finish a transaction; will retry");
            }
        }
    }

    /// What the timer must do with a transaction now: finish a half-ended one as decided
    /// (Some(commit)), abort an expired one (Some(false)), or nothing.
    fn due_action(meta: &TxnMeta, now: i64) -> Option<bool> {
        match meta.state {
            TxnState::PrepareCommit => Some(true),
            TxnState::PrepareAbort => Some(false),
            TxnState::Ongoing if now - meta.started_ms > meta.timeout_ms as i64 => Some(false),
            _ => None,
        }
    }

    /// A transactional id's current state (producer id, epoch, transaction state).
    pub fn state(&self, transactional_id: &str) -> Option<TxnMeta> {
        self.txns().get(transactional_id).cloned()
    }
}
