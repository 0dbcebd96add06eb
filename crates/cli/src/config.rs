//! `freshet serve` settings: command-line flags, then `FRESHET_*` environment variables (both
//! handled by clap), then the TOML config file, then defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use freshet_common::config::TopicConfig;
use serde::Deserialize;

/// The config file. Every field is optional; see `freshet.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub kafka_listen: Option<String>,
    pub advertised_kafka: Option<String>,
    /// Address of the HTTP listener (ksqlDB's REST API).
    pub http_listen: Option<String>,
    /// Bootstrap address(es) of an existing Kafka-protocol cluster: run only the SQL engine and
    /// the HTTP listener, with every topic in that cluster (no embedded broker).
    pub external_kafka: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<i32>,
    pub max_connections: Option<usize>,
    pub max_request_bytes: Option<usize>,
    /// Classic groups: shortest session a member may ask for (Kafka's group.min.session.timeout.ms).
    pub group_min_session_timeout_ms: Option<u64>,
    /// Classic groups: how long a new group waits for more members (group.initial.rebalance.delay.ms).
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Consumer-protocol groups: session timeout (group.consumer.session.timeout.ms).
    pub consumer_group_session_timeout_ms: Option<u64>,
    /// Consumer-protocol groups: heartbeat interval (group.consumer.heartbeat.interval.ms).
    pub consumer_group_heartbeat_interval_ms: Option<u64>,
    /// Broker-wide defaults for topic configs, by Kafka topic config name.
    #[serde(default)]
    pub topic_defaults: BTreeMap<String, toml::Value>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Resolved settings for `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub kafka_listen: SocketAddr,
    /// host:port clients are told to use; None: the bound address.
    pub advertised_kafka: Option<(String, u16)>,
    /// The HTTP listener (ksqlDB's REST API for the SQL engine).
    pub http_listen: SocketAddr,
    /// `HOST:PORT[,HOST:PORT...]` of an existing Kafka-protocol cluster: no embedded broker and
    /// no Kafka listener; the SQL engine keeps all its topics there.
    pub external_kafka: Option<String>,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    pub topic_defaults: TopicConfig,
    pub groups: freshet_broker::groups::GroupConfig,
    pub consumer_groups: freshet_broker::groups::ConsumerGroupConfig,
}

/// Values given on the command line or in the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub kafka_listen: Option<String>,
    pub advertised_kafka: Option<String>,
    pub http_listen: Option<String>,
    pub external_kafka: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<i32>,
    pub max_connections: Option<usize>,
}

pub fn parse_host_port(s: &str) -> Result<(String, u16)> {
    let (host, port) = s.rsplit_once(':').with_context(|| format!("'{s}' is not HOST:PORT"))?;
    let port: u16 = port.parse().with_context(|| format!("'{port}' is not a port number"))?;
    if host.is_empty() {
        bail!("'{s}' has no host");
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

impl ServeConfig {
    pub fn resolve(cli: Overrides, file: FileConfig) -> Result<ServeConfig> {
        let listen = cli.kafka_listen.or(file.kafka_listen).unwrap_or_else(|| "127.0.0.1:9092".into());
        let kafka_listen: SocketAddr =
            listen.parse().with_context(|| format!("--kafka-listen '{listen}' is not IP:PORT"))?;
        let http = cli.http_listen.or(file.http_listen).unwrap_or_else(|| "127.0.0.1:8088".into());
        let http_listen: SocketAddr = http.parse().with_context(|| format!("--http-listen '{http}' is not IP:PORT"))?;
        let advertised_kafka =
            cli.advertised_kafka.or(file.advertised_kafka).map(|a| parse_host_port(&a)).transpose()?;
        let external_kafka = cli.external_kafka.or(file.external_kafka);
        if let Some(list) = &external_kafka {
            for addr in list.split(',').map(str::trim) {
                parse_host_port(addr)
                    .with_context(|| format!("--external-kafka '{list}' is not HOST:PORT[,HOST:PORT...]"))?;
            }
        }
        let mut topic_defaults = TopicConfig::default();
        for (name, value) in &file.topic_defaults {
            let value = match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            topic_defaults.set(name, &value).with_context(|| format!("[topic_defaults] {name}"))?;
        }
        let default_partitions = cli.default_partitions.or(file.default_partitions).unwrap_or(1);
        if default_partitions < 1 {
            bail!("default partitions must be at least 1");
        }
        Ok(ServeConfig {
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("freshet-data")),
            kafka_listen,
            advertised_kafka,
            http_listen,
            external_kafka,
            auto_create_topics: cli.auto_create_topics.or(file.auto_create_topics).unwrap_or(true),
            default_partitions,
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(freshet_common::limits::DEFAULT_MAX_CONNECTIONS),
            max_request_bytes: file.max_request_bytes.unwrap_or(freshet_common::limits::MAX_REQUEST_BYTES),
            topic_defaults,
            groups: {
                let d = freshet_broker::groups::GroupConfig::default();
                freshet_broker::groups::GroupConfig {
                    min_session_timeout: file
                        .group_min_session_timeout_ms
                        .map(Duration::from_millis)
                        .unwrap_or(d.min_session_timeout),
                    initial_rebalance_delay: file
                        .group_initial_rebalance_delay_ms
                        .map(Duration::from_millis)
                        .unwrap_or(d.initial_rebalance_delay),
                    ..d
                }
            },
            consumer_groups: {
                let d = freshet_broker::groups::ConsumerGroupConfig::default();
                freshet_broker::groups::ConsumerGroupConfig {
                    session_timeout: file
                        .consumer_group_session_timeout_ms
                        .map(Duration::from_millis)
                        .unwrap_or(d.session_timeout),
                    heartbeat_interval: file
                        .consumer_group_heartbeat_interval_ms
                        .map(Duration::from_millis)
                        .unwrap_or(d.heartbeat_interval),
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flags_then_file_then_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/from/file"
            kafka_listen = "0.0.0.0:19092"
            default_partitions = 3
            [topic_defaults]
            "retention.ms" = 1000
            "cleanup.policy" = "delete"
            "#,
        )
        .unwrap();
        let cli = Overrides { data_dir: Some("/from/flag".into()), ..Default::default() };
        let c = ServeConfig::resolve(cli, file).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.kafka_listen, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(c.default_partitions, 3);
        assert!(c.auto_create_topics);
        assert_eq!(c.topic_defaults.get_override("retention.ms"), Some("1000"));
        let d = ServeConfig::resolve(Overrides::default(), FileConfig::default()).unwrap();
        assert_eq!(d.data_dir, PathBuf::from("freshet-data"));
        assert_eq!(d.kafka_listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(d.http_listen, "127.0.0.1:8088".parse().unwrap());
        let file: FileConfig = toml::from_str("http_listen = '0.0.0.0:18088'").unwrap();
        assert_eq!(
            ServeConfig::resolve(Overrides::default(), file).unwrap().http_listen,
            "0.0.0.0:18088".parse().unwrap()
        );
        let file: FileConfig = toml::from_str("http_listen = '0.0.0.0:18088'").unwrap();
        let cli = Overrides { http_listen: Some("127.0.0.1:0".into()), ..Default::default() };
        assert_eq!(ServeConfig::resolve(cli, file).unwrap().http_listen, "127.0.0.1:0".parse().unwrap());
        let file: FileConfig = toml::from_str("external_kafka = 'kafka1:9092,kafka2:9092'").unwrap();
        assert_eq!(
            ServeConfig::resolve(Overrides::default(), file).unwrap().external_kafka.as_deref(),
            Some("kafka1:9092,kafka2:9092")
        );
        assert_eq!(d.external_kafka, None);
    }

    #[test]
    fn bad_values_are_explained() {
        let err = toml::from_str::<FileConfig>("data_dri = 'x'").unwrap_err().to_string();
        assert!(err.contains("data_dri"), "{err}");
        let file: FileConfig = toml::from_str("[topic_defaults]\n'retention.ms' = 'soon'").unwrap();
        let err = format!("{:#}", ServeConfig::resolve(Overrides::default(), file).unwrap_err());
        assert!(err.contains("retention.ms") && err.contains("integer"), "{err}");
        let cli = Overrides { kafka_listen: Some("localhost".into()), ..Default::default() };
        assert!(ServeConfig::resolve(cli, FileConfig::default()).is_err());
        let cli = Overrides { external_kafka: Some("kafka1".into()), ..Default::default() };
        assert!(ServeConfig::resolve(cli, FileConfig::default()).is_err());
    }
}
