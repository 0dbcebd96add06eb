//! The broker: topic registry, data directory, background maintenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use freshet_common::config::TopicConfig;
use freshet_common::limits::{MAINTENANCE_INTERVAL_MS, MAX_PARTITIONS_PER_TOPIC};
use freshet_common::validate_topic_name;
use freshet_log::fs::{self, Fs};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::groups::{ConsumerGroupConfig, GroupConfig, GroupCoordinator, OffsetStore, TopicShape, OFFSETS_TOPIC};
use crate::topics::{Topic, TopicMeta};
use crate::txn::{ProducerIds, TxnCoordinator, TXN_TOPIC};

/// Topics the broker keeps for itself; clients may read but not write or delete them.
pub const INTERNAL_TOPICS: &[&str] = &[OFFSETS_TOPIC, TXN_TOPIC];

/// Whether a topic is one of the broker's own.
pub fn is_internal(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub node_id: i32,
    /// Host and port clients are told to connect to (Metadata).
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Create a topic when Metadata asks for one that does not exist (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, or of a CreateTopics asking for -1 (`num.partitions`).
    pub default_partitions: i32,
    /// Broker-wide overrides of the topic config defaults.
    pub topic_defaults: TopicConfig,
    /// Classic consumer group timeouts.
    pub groups: GroupConfig,
    /// Consumer-protocol (KIP-848) group settings.
    pub consumer_groups: ConsumerGroupConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("freshet-data"),
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            default_partitions: 1,
            topic_defaults: TopicConfig::default(),
            groups: GroupConfig::default(),
            consumer_groups: ConsumerGroupConfig::default(),
        }
    }
}

/// Errors opening the broker or changing topics.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad metadata file {path}: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("data directory {path} is in use by another freshet process")]
    Locked { path: PathBuf },
    #[error("{message}")]
    Kafka { code: ResponseError, message: String },
}

impl BrokerError {
    pub(crate) fn kafka(code: ResponseError, message: impl Into<String>) -> Self {
        BrokerError::Kafka { code, message: message.into() }
    }
    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        match self {
            BrokerError::Kafka { code, .. } => code.code(),
            _ => ResponseError::KafkaStorageError.code(),
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io { path: path.to_path_buf(), source }
}

#[derive(Serialize, Deserialize)]
struct ClusterMeta {
    cluster_id: String,
    node_id: i32,
    version: u32,
}

/// The broker.
pub struct Broker {
    /// Exclusive lock on the data directory, held for the broker's life.
    _lock: Box<dyn std::any::Any + Send + Sync>,
    pub(crate) config: BrokerConfig,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes changes to the set of topics and their configs.
    admin: Mutex<()>,
    groups: std::sync::OnceLock<Arc<GroupCoordinator>>,
    txns: std::sync::OnceLock<Arc<TxnCoordinator>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("data_dir", &self.config.data_dir).field("cluster_id", &self.cluster_id).finish()
    }
}

impl Broker {
    fn topics_dir(&self) -> PathBuf {
        self.config.data_dir.join("topics")
    }
    fn trash_dir(&self) -> PathBuf {
        self.config.data_dir.join("deleted")
    }

    /// Opens the data directory, recovering every partition log. Blocking.
    pub fn open(config: BrokerConfig, fs: Arc<dyn Fs>) -> Result<Arc<Broker>, BrokerError> {
        let data = config.data_dir.clone();
        fs.create_dir_all(&data).map_err(io_err(&data))?;
        // One broker per data directory: a second one would interleave writes to the same logs.
        let lock_path = data.join("lock");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => BrokerError::Locked { path: data.clone() },
            _ => io_err(&lock_path)(e),
        })?;
        fs.create_dir_all(&data.join("topics")).map_err(io_err(&data))?;
        fs.create_dir_all(&data.join("deleted")).map_err(io_err(&data))?;
        let meta_path = data.join("cluster.json");
        let cluster_id = if fs.exists(&meta_path) {
            let bytes = fs::read_all(&*fs, &meta_path).map_err(io_err(&meta_path))?;
            let meta: ClusterMeta = serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Metadata { path: meta_path.clone(), reason: e.to_string() })?;
            meta.cluster_id
        } else {
            let meta =
                ClusterMeta { cluster_id: Uuid::new_v4().simple().to_string(), node_id: config.node_id, version: 1 };
            let bytes = serde_json::to_vec_pretty(&meta).expect("serializable");
            fs::write_atomic(&*fs, &meta_path, &bytes).map_err(io_err(&meta_path))?;
            meta.cluster_id
        };
        let broker = Broker {
            _lock: lock,
            config,
            fs,
            cluster_id,
            topics: RwLock::default(),
            admin: Mutex::default(),
            groups: Default::default(),
            txns: Default::default(),
        };
        broker.load_topics()?;
        broker.empty_trash();
        broker.open_internal_topics()?;
        Ok(Arc::new(broker))
    }

    /// Creates the internal topics if needed and loads the state they hold.
    fn open_internal_topics(&self) -> Result<(), BrokerError> {
        for name in INTERNAL_TOPICS {
            if self.topic(name).is_none() {
                // Committed offsets and transaction state are kept by key (compaction), never by
                // age or size; small segments let the cleaner reach them. Every write is fsynced
                // (see `topics::INTERNAL_OVERRIDES`, also forced when the topic is opened).
                let pairs = [("cleanup.policy", "compact"), ("segment.bytes", "104857600")];
                let config =
                    TopicConfig::from_pairs(pairs.into_iter().chain(crate::topics::INTERNAL_OVERRIDES.iter().copied()))
                        .expect("valid internal topic config");
                self.create_topic(name, 1, config, false)?;
            }
        }
        let partition = self.topic(OFFSETS_TOPIC).and_then(|t| t.partition(0)).expect("offsets topic exists");
        let store = OffsetStore::load(partition)
            .map_err(|reason| BrokerError::Metadata { path: self.topics_dir().join(OFFSETS_TOPIC), reason })?;
        let coordinator = GroupCoordinator::new(self.config.groups, self.config.consumer_groups, store);
        let _ = self.groups.set(Arc::new(coordinator));
        let ids_path = self.config.data_dir.join("producer-ids");
        let ids = ProducerIds::open(self.fs.clone(), ids_path.clone()).map_err(io_err(&ids_path))?;
        let partition = self.topic(TXN_TOPIC).and_then(|t| t.partition(0)).expect("transaction topic exists");
        let txns = TxnCoordinator::load(partition, ids)
            .map_err(|reason| BrokerError::Metadata { path: self.topics_dir().join(TXN_TOPIC), reason })?;
        let _ = self.txns.set(Arc::new(txns));
        Ok(())
    }

    /// The transaction coordinator (and producer ids).
    pub fn txns(&self) -> &Arc<TxnCoordinator> {
        self.txns.get().expect("the transaction coordinator is set when the broker opens")
    }

    /// The group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        self.groups.get().expect("the coordinator is set when the broker opens")
    }

    fn load_topics(&self) -> Result<(), BrokerError> {
        let dir = self.topics_dir();
        let mut topics = BTreeMap::new();
        let started = std::time::Instant::now();
        for path in self.fs.read_dir(&dir).map_err(io_err(&dir))? {
            let meta_path = path.join("topic.json");
            if !self.fs.exists(&meta_path) {
                // A creation that never finished: the metadata file is written last.
                tracing::warn!(dir = %path.display(), "removing an incompletely created topic");
                self.fs.remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            let bytes = fs::read_all(&*self.fs, &meta_path).map_err(io_err(&meta_path))?;
            let meta: TopicMeta = serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Metadata { path: meta_path.clone(), reason: e.to_string() })?;
            let topic = Topic::open(self, meta, &path)?;
            topics.insert(topic.name.clone(), Arc::new(topic));
        }
        tracing::info!(topics = topics.len(), elapsed_ms = started.elapsed().as_millis() as u64, "recovered topics");
        *self.topics.write().expect("topics lock") = topics;
        Ok(())
    }

    fn empty_trash(&self) {
        let trash = self.trash_dir();
        if let Ok(entries) = self.fs.read_dir(&trash) {
            for path in entries {
                if let Err(e) = self.fs.remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a deleted topic's files");
                }
            }
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().expect("topics lock").values().cloned().collect()
    }

    /// Creates a topic (blocking: it creates and fsyncs files) and returns its id and partition
    /// count. With `validate_only`, only checks.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<(Uuid, i32), BrokerError> {
        validate_topic_name(name)
            .map_err(|e| BrokerError::kafka(ResponseError::InvalidTopicException, e.to_string()))?;
        let partitions = if partitions == -1 { self.config.default_partitions } else { partitions };
        if partitions <= 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(BrokerError::kafka(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, not {partitions}"),
            ));
        }
        let _admin = self.admin.lock().expect("admin lock");
        if self.topic(name).is_some() {
            return Err(BrokerError::kafka(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        // Kafka refuses names that collide once '.' and '_' are treated alike (metric names).
        let folded = name.replace('.', "_");
        if let Some(other) = self.topics().into_iter().find(|t| t.name.replace('.', "_") == folded) {
            return Err(BrokerError::kafka(
                ResponseError::InvalidTopicException,
                format!(
                    "topic '{name}' collides with existing topic '{}' ('.' and '_' are interchangeable)",
                    other.name
                ),
            ));
        }
        let id = Uuid::new_v4();
        let configs = config.overrides().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let meta = TopicMeta { name: name.to_string(), id, partitions, configs };
        if validate_only {
            return Ok((id, partitions));
        }
        let dir = self.topics_dir().join(name);
        let topic = Arc::new(Topic::create(self, meta, &dir)?);
        self.topics.write().expect("topics lock").insert(name.to_string(), topic);
        tracing::info!(topic = name, partitions, "created topic");
        Ok((id, partitions))
    }

    /// Deletes a topic: its directory is moved aside atomically, then removed.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        Self::refuse_internal(name)?;
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self.topic(name).ok_or_else(|| {
            BrokerError::kafka(ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))
        })?;
        self.topics.write().expect("topics lock").remove(name);
        topic.close_partitions();
        let from = self.topics_dir().join(name);
        let to = self.trash_dir().join(format!("{name}-{}", topic.id.simple()));
        self.fs.rename(&from, &to).map_err(io_err(&from))?;
        let topics_dir = self.topics_dir();
        self.fs.sync_dir(&topics_dir).map_err(io_err(&topics_dir))?;
        if let Err(e) = self.fs.remove_dir_all(&to) {
            tracing::warn!(path = %to.display(), error = %e, "could not remove a deleted topic's files; will retry at startup");
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Refuses changes to the broker's own topics, as Kafka refuses writes and DeleteRecords to
    /// its internal topics (INVALID_TOPIC_EXCEPTION).
    pub(crate) fn refuse_internal(name: &str) -> Result<(), BrokerError> {
        if is_internal(name) {
            return Err(BrokerError::kafka(
                ResponseError::InvalidTopicException,
                format!("'{name}' is an internal topic"),
            ));
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), BrokerError> {
        Self::refuse_internal(name)?;
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self.topic(name).ok_or_else(|| {
            BrokerError::kafka(ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))
        })?;
        let current = topic.partition_count();
        if count <= current {
            return Err(BrokerError::kafka(
                ResponseError::InvalidPartitions,
                format!("topic '{name}' has {current} partitions; the new count {count} must be larger"),
            ));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(BrokerError::kafka(
                ResponseError::InvalidPartitions,
                format!("at most {MAX_PARTITIONS_PER_TOPIC} partitions per topic"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        topic.grow(self, count)
    }

    /// Replaces a topic's config overrides.
    pub fn set_topic_config(&self, name: &str, config: TopicConfig) -> Result<(), BrokerError> {
        Self::refuse_internal(name)?;
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self.topic(name).ok_or_else(|| {
            BrokerError::kafka(ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))
        })?;
        topic.set_config(self, config)
    }

    /// One pass of background work: retention, fsyncs due under relaxed `flush.messages`, and
    /// compaction of compacted topics.
    pub fn maintain(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.maintain(now);
                partition.compact(now);
            }
        }
    }

    /// Starts the background work: [`Broker::maintain`] every second on a blocking thread, and
    /// the group coordinator's timers. Both stop when the broker is dropped.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        let shapes = Arc::new(move |topic: &str| weak.upgrade().and_then(|b| b.topic_shape(topic)));
        vec![self.spawn_maintenance(), self.groups().spawn_timers(shapes), self.spawn_txn_timers()]
    }

    /// Finishes half-ended transactions and aborts expired ones, once a second.
    fn spawn_txn_timers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(MAINTENANCE_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                broker.txns().tick(&broker).await;
            }
        })
    }

    /// A topic's id and partition count, for group assignments.
    pub fn topic_shape(&self, topic: &str) -> Option<TopicShape> {
        self.topic(topic).map(|t| TopicShape { id: t.id, partitions: t.partition_count() })
    }

    fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(MAINTENANCE_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                if tokio::task::spawn_blocking(move || broker.maintain()).await.is_err() {
                    tracing::error!("maintenance pass panicked");
                }
            }
        })
    }

    /// Flushes every log and writes its indexes (clean shutdown). Blocking.
    pub fn close(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.close(now);
            }
        }
        tracing::info!("all logs flushed and closed");
    }
}
