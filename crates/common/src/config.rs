//! Topic configuration: the Kafka topic config names Freshet knows, their defaults and checks.
//!
//! A topic stores only its overrides ([`TopicConfig`]); a value is resolved as topic override,
//! then the broker's default for all topics, then the static default in [`TOPIC_CONFIGS`].
//! Names Kafka tooling commonly sends but that have no meaning on a single node (replication,
//! tiered storage) are accepted and reported by DescribeConfigs, marked inert in their
//! documentation; unknown names are refused, as Kafka refuses them.

use std::collections::BTreeMap;
use std::fmt;

/// The type of a config value, as DescribeConfigs (v3+) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl ConfigKind {
    /// Kafka's `ConfigType` code for DescribeConfigs v3+.
    pub fn kafka_code(self) -> i8 {
        match self {
            ConfigKind::Boolean => 1,
            ConfigKind::String => 2,
            ConfigKind::Int => 3,
            ConfigKind::Long => 5,
            ConfigKind::Double => 6,
            ConfigKind::List => 7,
        }
    }
}

/// What a value may be, beyond its kind.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Any value of the kind.
    Any,
    /// An integer in `min..=max`.
    Range(i64, i64),
    /// A double in `min..=max`.
    DoubleRange(f64, f64),
    /// One of these strings (for a list: every element is one of them).
    OneOf(&'static [&'static str]),
}

/// One topic config Freshet knows.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    /// The name of the broker-wide default in Kafka (the synonym DescribeConfigs reports).
    pub broker_name: &'static str,
    pub kind: ConfigKind,
    pub default: &'static str,
    pub check: Check,
    /// False where Freshet stores and reports the value but it changes nothing (documented).
    pub honoured: bool,
    pub doc: &'static str,
}

const LONG_MAX: i64 = i64::MAX;
const INT_MAX: i64 = i32::MAX as i64;

/// Every topic config Freshet accepts, with its default.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        kind: ConfigKind::List,
        default: "delete",
        check: Check::OneOf(&["delete", "compact"]),
        honoured: true,
        doc: "delete: old segments go by retention.ms / retention.bytes; compact: sealed segments keep the \
              latest record per key; both: compact, and delete by retention.",
    },
    ConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        kind: ConfigKind::String,
        default: "producer",
        check: Check::OneOf(&["producer"]),
        honoured: true,
        doc: "Batches are stored exactly as the producer compressed them (gzip, snappy, lz4, zstd or none).",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        kind: ConfigKind::Long,
        default: "86400000",
        check: Check::Range(0, LONG_MAX),
        honoured: true,
        doc: "Compaction keeps a tombstone (a record with no value) until its timestamp is this old.",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        kind: ConfigKind::Long,
        default: "60000",
        check: Check::Range(0, LONG_MAX),
        honoured: false,
        doc: "Inert: Freshet unlinks expired segments at once; readers keep their open handles.",
    },
    ConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        kind: ConfigKind::Long,
        default: "1",
        check: Check::Range(1, LONG_MAX),
        honoured: true,
        doc: "1 (Freshet's default): every write is fsynced (group commit) before it is acknowledged \
              with acks=all and before consumers can read it. N > 1: fsync after N messages or \
              flush.ms, acknowledge and expose writes once they reach the OS (Kafka's default behaviour).",
    },
    ConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::Range(0, LONG_MAX),
        honoured: true,
        doc: "With flush.messages > 1: the longest a write stays unflushed (checked once a second).",
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        kind: ConfigKind::Int,
        default: "4096",
        check: Check::Range(0, INT_MAX),
        honoured: true,
        doc: "Bytes of log between two entries of the sparse offset index.",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::Range(1, LONG_MAX),
        honoured: true,
        doc: "Compaction runs regardless of min.cleanable.dirty.ratio once a dirty segment is this old.",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        kind: ConfigKind::Int,
        default: "1048588",
        check: Check::Range(0, INT_MAX),
        honoured: true,
        doc: "Largest record batch a producer may write, in bytes.",
    },
    ConfigDef {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        kind: ConfigKind::Boolean,
        default: "true",
        check: Check::Any,
        honoured: false,
        doc: "Inert: Freshet only serves record batch format v2.",
    },
    ConfigDef {
        name: "message.format.version",
        broker_name: "log.message.format.version",
        kind: ConfigKind::String,
        default: "3.0-IV1",
        check: Check::Any,
        honoured: false,
        doc: "Inert: Freshet stores record batch format v2 only.",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        kind: ConfigKind::String,
        default: "CreateTime",
        check: Check::OneOf(&["CreateTime", "LogAppendTime"]),
        honoured: true,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock.",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        kind: ConfigKind::Double,
        default: "0.5",
        check: Check::DoubleRange(0.0, 1.0),
        honoured: true,
        doc: "Compaction runs when this share of the sealed log was written since it last ran.",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::Range(0, LONG_MAX),
        honoured: true,
        doc: "Segments stay uncompacted until their newest record is this old.",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        kind: ConfigKind::Int,
        default: "1",
        check: Check::Range(1, INT_MAX),
        honoured: true,
        doc: "A single node has one replica: above 1, acks=all produce fails with NOT_ENOUGH_REPLICAS.",
    },
    ConfigDef {
        name: "preallocate",
        broker_name: "log.preallocate",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        honoured: false,
        doc: "Inert: segment files grow as they are written.",
    },
    ConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        kind: ConfigKind::Long,
        default: "-1",
        check: Check::Range(-1, LONG_MAX),
        honoured: true,
        doc: "Largest size a partition's log may grow to before its oldest segments are deleted; -1 for no limit.",
    },
    ConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        check: Check::Range(-1, LONG_MAX),
        honoured: true,
        doc: "How long a segment is kept after its newest record's timestamp; -1 for ever.",
    },
    ConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        kind: ConfigKind::Int,
        default: "1073741824",
        check: Check::Range(crate::limits::MIN_SEGMENT_BYTES as i64, INT_MAX),
        honoured: true,
        doc: "Size at which the active segment is sealed and a new one started.",
    },
    ConfigDef {
        name: "segment.index.bytes",
        broker_name: "log.index.size.max.bytes",
        kind: ConfigKind::Int,
        default: "10485760",
        check: Check::Range(4, INT_MAX),
        honoured: false,
        doc: "Inert: index files grow with their segment.",
    },
    ConfigDef {
        name: "segment.jitter.ms",
        broker_name: "log.roll.jitter.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::Range(0, LONG_MAX),
        honoured: false,
        doc: "Inert: segments roll exactly at segment.ms.",
    },
    ConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        check: Check::Range(1, LONG_MAX),
        honoured: true,
        doc: "Age (from the first batch's timestamp) at which the active segment is sealed.",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        honoured: false,
        doc: "Inert: a single node is always the leader.",
    },
];

/// Looks up a config definition by name.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a config value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    Unknown(String),
    #[error("invalid value '{value}' for config '{name}': {reason}")]
    Invalid { name: String, value: String, reason: String },
}

fn invalid(def: &ConfigDef, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: def.name.to_string(), value: value.to_string(), reason: reason.into() }
}

/// Checks `value` for config `name` and returns it in canonical form.
pub fn validate(name: &str, value: &str) -> Result<String, ConfigError> {
    let def = config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    let value = value.trim();
    match def.kind {
        ConfigKind::Boolean => match value.to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => Ok(v.to_string()),
            _ => Err(invalid(def, value, "expected true or false")),
        },
        ConfigKind::Int | ConfigKind::Long => {
            let n: i64 = value.parse().map_err(|_| invalid(def, value, "expected an integer"))?;
            let (lo, hi) = match def.check {
                Check::Range(lo, hi) => (lo, hi),
                _ => (i64::MIN, i64::MAX),
            };
            if n < lo || n > hi {
                return Err(invalid(def, value, format!("must be between {lo} and {hi}")));
            }
            Ok(n.to_string())
        }
        ConfigKind::Double => {
            let n: f64 = value.parse().map_err(|_| invalid(def, value, "expected a number"))?;
            if let Check::DoubleRange(lo, hi) = def.check {
                if !(lo..=hi).contains(&n) {
                    return Err(invalid(def, value, format!("must be between {lo} and {hi}")));
                }
            }
            Ok(n.to_string())
        }
        ConfigKind::String => {
            if let Check::OneOf(allowed) = def.check {
                if !allowed.contains(&value) {
                    return Err(invalid(def, value, format!("must be one of {}", allowed.join(", "))));
                }
            }
            Ok(value.to_string())
        }
        ConfigKind::List => {
            let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if let Check::OneOf(allowed) = def.check {
                if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                    return Err(invalid(def, value, format!("'{bad}' is not one of {}", allowed.join(", "))));
                }
            }
            if items.is_empty() {
                return Err(invalid(def, value, "the list is empty"));
            }
            Ok(items.join(","))
        }
    }
}

/// The overrides one topic (or the broker, for all topics) sets, by config name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Builds a config from name/value pairs, checking each one.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut config = TopicConfig::default();
        for (name, value) in pairs {
            config.set(name, value)?;
        }
        Ok(config)
    }

    /// Sets an override after checking it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let value = validate(name, value)?;
        self.overrides.insert(name.to_string(), value);
        Ok(())
    }

    /// Removes an override (the value falls back to the default). Unknown names are refused.
    pub fn remove(&mut self, name: &str) -> Result<(), ConfigError> {
        config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        self.overrides.remove(name);
        Ok(())
    }

    /// The override for `name`, if this config sets one.
    pub fn get_override(&self, name: &str) -> Option<&str> {
        self.overrides.get(name).map(String::as_str)
    }

    /// All overrides, sorted by name.
    pub fn overrides(&self) -> impl Iterator<Item = (&str, &str)> {
        self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Resolves `name`: this override, then `defaults`' override, then the static default.
    pub fn resolve<'a>(&'a self, defaults: &'a TopicConfig, name: &str) -> (&'a str, ConfigSource) {
        if let Some(v) = self.get_override(name) {
            return (v, ConfigSource::Topic);
        }
        if let Some(v) = defaults.get_override(name) {
            return (v, ConfigSource::Broker);
        }
        let def = config_def(name).unwrap_or_else(|| panic!("resolve called with unknown config {name}"));
        (def.default, ConfigSource::Default)
    }

    /// Resolves an integer config (Int or Long kind).
    pub fn resolve_i64(&self, defaults: &TopicConfig, name: &str) -> i64 {
        let (value, _) = self.resolve(defaults, name);
        // Values were validated on the way in, so they parse.
        value.parse().unwrap_or_else(|_| panic!("config {name} holds a non-integer '{value}'"))
    }

    /// Resolves a floating-point config.
    pub fn resolve_f64(&self, defaults: &TopicConfig, name: &str) -> f64 {
        let (value, _) = self.resolve(defaults, name);
        value.parse().unwrap_or_else(|_| panic!("config {name} holds a non-number '{value}'"))
    }

    /// Resolves a string config.
    pub fn resolve_str<'a>(&'a self, defaults: &'a TopicConfig, name: &str) -> &'a str {
        self.resolve(defaults, name).0
    }
}

/// Where a resolved config value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// Set in the broker's configuration for all topics.
    Broker,
    /// Freshet's built-in default.
    Default,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigSource::Topic => "topic",
            ConfigSource::Broker => "broker",
            ConfigSource::Default => "default",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_values() {
        for def in TOPIC_CONFIGS {
            assert_eq!(validate(def.name, def.default).as_deref(), Ok(def.default), "{}", def.name);
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} !< {}", pair[0].name, pair[1].name);
        }
    }

    #[test]
    fn refuses_unknown_and_bad_values() {
        assert_eq!(validate("retention.mss", "1"), Err(ConfigError::Unknown("retention.mss".into())));
        assert!(matches!(validate("retention.ms", "soon"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(validate("retention.ms", "-2"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(validate("segment.bytes", "10"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(validate("message.timestamp.type", "Now"), Err(ConfigError::Invalid { .. })));
        assert_eq!(validate("cleanup.policy", " delete "), Ok("delete".to_string()));
        assert_eq!(validate("preallocate", "TRUE"), Ok("true".to_string()));
    }

    #[test]
    fn resolution_order() {
        let defaults = TopicConfig::from_pairs([("retention.ms", "1000"), ("segment.ms", "5000")]).unwrap();
        let topic = TopicConfig::from_pairs([("retention.ms", "2000")]).unwrap();
        assert_eq!(topic.resolve(&defaults, "retention.ms"), ("2000", ConfigSource::Topic));
        assert_eq!(topic.resolve(&defaults, "segment.ms"), ("5000", ConfigSource::Broker));
        assert_eq!(topic.resolve(&defaults, "retention.bytes"), ("-1", ConfigSource::Default));
        assert_eq!(topic.resolve_i64(&defaults, "segment.ms"), 5000);
    }
}
