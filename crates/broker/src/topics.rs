//! Topics: their metadata file, configuration and partitions.
//!
//! On disk a topic is `topics/<name>/` with `topic.json` (written last when a topic is created,
//! so a directory without it is an unfinished creation) and one directory per partition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use freshet_common::config::TopicConfig;
use freshet_log::fs;
use freshet_log::LogConfig;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::broker::{io_err, now_ms, Broker, BrokerError};
use crate::partition::Partition;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    fn config(&self, path: &Path) -> Result<TopicConfig, BrokerError> {
        let mut config = TopicConfig::from_pairs(self.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| BrokerError::Metadata { path: path.to_path_buf(), reason: e.to_string() })?;
        if crate::broker::is_internal(&self.name) {
            force_internal_overrides(&mut config);
        }
        Ok(config)
    }
}

/// Overrides every internal topic has, whatever the broker-wide `[topic_defaults]` say: the
/// coordinators rely on each record being durable (fsynced) before it is acknowledged or acted
/// on, so a relaxed `flush.messages` must never reach them.
pub(crate) const INTERNAL_OVERRIDES: &[(&str, &str)] = &[("flush.messages", "1")];

fn force_internal_overrides(config: &mut TopicConfig) {
    for (name, value) in INTERNAL_OVERRIDES {
        config.set(name, value).expect("valid internal topic override");
    }
}

/// A topic.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    dir: PathBuf,
    config: RwLock<TopicConfig>,
    /// What Produce checks on every request, resolved once per config change.
    produce_rules: RwLock<ProduceRules>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic").field("name", &self.name).field("partitions", &self.partition_count()).finish()
    }
}

/// The settings Produce checks, resolved from the topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRules {
    pub min_insync_replicas: i64,
    /// Compacted topics only take records with keys.
    pub keys_required: bool,
}

fn produce_rules(topic: &TopicConfig, defaults: &TopicConfig) -> ProduceRules {
    ProduceRules {
        min_insync_replicas: topic.resolve_i64(defaults, "min.insync.replicas"),
        keys_required: topic.resolve_str(defaults, "cleanup.policy").split(',').any(|p| p == "compact"),
    }
}

/// The compaction settings a topic config resolves to, if its cleanup policy compacts.
pub(crate) fn compaction_config(
    topic: &TopicConfig,
    defaults: &TopicConfig,
) -> Option<crate::cleaner::CompactionConfig> {
    if !topic.resolve_str(defaults, "cleanup.policy").split(',').any(|p| p == "compact") {
        return None;
    }
    Some(crate::cleaner::CompactionConfig {
        delete_retention_ms: topic.resolve_i64(defaults, "delete.retention.ms"),
        min_dirty_ratio: topic.resolve_f64(defaults, "min.cleanable.dirty.ratio"),
        min_lag_ms: topic.resolve_i64(defaults, "min.compaction.lag.ms"),
        max_lag_ms: topic.resolve_i64(defaults, "max.compaction.lag.ms"),
    })
}

/// The storage settings a topic config resolves to.
pub(crate) fn log_config(topic: &TopicConfig, defaults: &TopicConfig) -> LogConfig {
    let int = |name: &str| topic.resolve_i64(defaults, name);
    LogConfig {
        segment_bytes: int("segment.bytes") as u64,
        segment_ms: int("segment.ms"),
        retention_ms: int("retention.ms"),
        retention_bytes: int("retention.bytes"),
        retention_enabled: topic.resolve_str(defaults, "cleanup.policy").split(',').any(|p| p == "delete"),
        index_interval_bytes: int("index.interval.bytes") as u64,
        max_message_bytes: int("max.message.bytes") as usize,
        log_append_time: topic.resolve_str(defaults, "message.timestamp.type") == "LogAppendTime",
        flush_messages: int("flush.messages") as u64,
        flush_ms: int("flush.ms"),
    }
}

impl Topic {
    fn partition_dir(dir: &Path, index: i32) -> PathBuf {
        dir.join(index.to_string())
    }

    /// Opens an existing topic, recovering its partitions.
    pub(crate) fn open(broker: &Broker, meta: TopicMeta, dir: &Path) -> Result<Topic, BrokerError> {
        let config = meta.config(&dir.join("topic.json"))?;
        let log_config = log_config(&config, &broker.config.topic_defaults);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for index in 0..meta.partitions {
            let pdir = Self::partition_dir(dir, index);
            let p = Partition::open(broker.fs.clone(), &pdir, &meta.name, index, log_config.clone());
            p.set_compaction(compaction_config(&config, &broker.config.topic_defaults));
            partitions.push(Arc::new(p));
        }
        // Partition directories past the count are left from a CreatePartitions that never
        // finished (the count in topic.json is written last).
        for path in broker.fs.read_dir(dir).map_err(io_err(dir))? {
            let index: Option<i32> = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok());
            if index.is_some_and(|i| i >= meta.partitions) && broker.fs.is_dir(&path) {
                broker.fs.remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(Topic {
            name: meta.name,
            id: meta.id,
            dir: dir.to_path_buf(),
            produce_rules: RwLock::new(produce_rules(&config, &broker.config.topic_defaults)),
            config: RwLock::new(config),
            partitions: RwLock::new(partitions),
        })
    }

    /// Creates a topic's files; `topic.json` comes last and makes the creation durable.
    pub(crate) fn create(broker: &Broker, meta: TopicMeta, dir: &Path) -> Result<Topic, BrokerError> {
        let config = meta.config(&dir.join("topic.json"))?;
        if broker.fs.exists(dir) {
            // Left over from a creation that crashed before topic.json was written.
            broker.fs.remove_dir_all(dir).map_err(io_err(dir))?;
        }
        broker.fs.create_dir_all(dir).map_err(io_err(dir))?;
        let log_config = log_config(&config, &broker.config.topic_defaults);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for index in 0..meta.partitions {
            let pdir = Self::partition_dir(dir, index);
            let p = Partition::open(broker.fs.clone(), &pdir, &meta.name, index, log_config.clone());
            if let Some(reason) = p.offline_reason() {
                return Err(BrokerError::kafka(ResponseError::KafkaStorageError, reason));
            }
            p.set_compaction(compaction_config(&config, &broker.config.topic_defaults));
            partitions.push(Arc::new(p));
        }
        broker.fs.sync_dir(dir).map_err(io_err(dir))?;
        write_meta(broker, dir, &meta)?;
        let parent = dir.parent().expect("topics dir");
        broker.fs.sync_dir(parent).map_err(io_err(parent))?;
        Ok(Topic {
            name: meta.name,
            id: meta.id,
            dir: dir.to_path_buf(),
            produce_rules: RwLock::new(produce_rules(&config, &broker.config.topic_defaults)),
            config: RwLock::new(config),
            partitions: RwLock::new(partitions),
        })
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().expect("partitions lock");
        usize::try_from(index).ok().and_then(|i| partitions.get(i).cloned())
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").clone()
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().expect("partitions lock").len() as i32
    }

    /// The settings Produce checks.
    pub fn produce_rules(&self) -> ProduceRules {
        *self.produce_rules.read().expect("rules lock")
    }

    /// The topic's config overrides.
    pub fn config(&self) -> TopicConfig {
        self.config.read().expect("config lock").clone()
    }

    fn meta(&self, partitions: i32, config: &TopicConfig) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            id: self.id,
            partitions,
            configs: config.overrides().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    pub(crate) fn set_config(&self, broker: &Broker, config: TopicConfig) -> Result<(), BrokerError> {
        write_meta(broker, &self.dir, &self.meta(self.partition_count(), &config))?;
        let log_config = log_config(&config, &broker.config.topic_defaults);
        let compaction = compaction_config(&config, &broker.config.topic_defaults);
        for p in self.partitions() {
            p.set_config(log_config.clone(), now_ms());
            p.set_compaction(compaction);
        }
        *self.produce_rules.write().expect("rules lock") = produce_rules(&config, &broker.config.topic_defaults);
        *self.config.write().expect("config lock") = config;
        Ok(())
    }

    pub(crate) fn grow(&self, broker: &Broker, count: i32) -> Result<(), BrokerError> {
        let config = self.config();
        let log_config = log_config(&config, &broker.config.topic_defaults);
        let current = self.partition_count();
        let mut added = Vec::new();
        for index in current..count {
            let p = Partition::open(
                broker.fs.clone(),
                &Self::partition_dir(&self.dir, index),
                &self.name,
                index,
                log_config.clone(),
            );
            if let Some(reason) = p.offline_reason() {
                return Err(BrokerError::kafka(ResponseError::KafkaStorageError, reason));
            }
            p.set_compaction(compaction_config(&config, &broker.config.topic_defaults));
            added.push(Arc::new(p));
        }
        broker.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        write_meta(broker, &self.dir, &self.meta(count, &config))?;
        self.partitions.write().expect("partitions lock").extend(added);
        tracing::info!(topic = %self.name, from = current, to = count, "added partitions");
        Ok(())
    }

    pub(crate) fn close_partitions(&self) {
        let now = now_ms();
        for p in self.partitions() {
            p.close(now);
        }
    }
}

fn write_meta(broker: &Broker, dir: &Path, meta: &TopicMeta) -> Result<(), BrokerError> {
    let path = dir.join("topic.json");
    let bytes = serde_json::to_vec_pretty(meta).expect("serializable");
    fs::write_atomic(&*broker.fs, &path, &bytes).map_err(io_err(&path))
}
