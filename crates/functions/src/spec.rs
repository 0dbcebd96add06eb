//! A function's definition as deployed: [`FunctionSpec`]. It travels as JSON (the HTTP API, the
//! functions topic); [`FunctionSpec::validate`] checks it against the limits in
//! `freshet_common::limits` and names the first problem.

use std::collections::BTreeMap;

use freshet_common::limits::*;
use serde::{Deserialize, Serialize};

/// What kind of function it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuntimeSpec {
    /// A WebAssembly module (its bytes travel beside the spec, see [`Deployment`]), run
    /// in-process by wasmtime. The ABI is documented in `docs/functions-wasm-abi.md`.
    Wasm,
    /// Any executable, kept alive in a worker pool, speaking JSON lines on stdin/stdout.
    /// `command` runs with `sh -c`.
    Process {
        command: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A user's HTTP endpoint that receives CloudEvents.
    Http {
        url: String,
        /// `binary` (the default: attributes in `ce-` headers, data as the body) or
        /// `structured` (one `application/cloudevents+json` document).
        #[serde(default)]
        mode: CloudEventsMode,
        /// PEM certificates trusted for an `https://` URL besides Mozilla's roots and the
        /// system's trust store (a private CA, a self-signed endpoint).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_ca: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudEventsMode {
    #[default]
    Binary,
    Structured,
}

/// Where a topic trigger starts when its consumer group has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    #[default]
    Earliest,
    Latest,
    /// The first record at or after this timestamp (ms since the epoch).
    Timestamp(i64),
}

/// What runs the function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Every record of a topic, consumed by the function's own consumer group.
    Topic {
        topic: String,
        /// The consumer group; default `freshet-fn-<name>`.
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        start: Start,
        /// An event filter on the JSON value (EventBridge-style pattern); records that do not
        /// match are skipped (and committed).
        #[serde(default)]
        filter: Option<serde_json::Value>,
    },
    /// `POST /functions/NAME/invoke`, answered with the function's output.
    Http,
    /// A cron expression (`sec min hour day-of-month month day-of-week`, or the five-field
    /// form without seconds), in UTC.
    Cron { expr: String },
}

/// Retries of a failing event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts per event, the first included; then the event goes to the dead-letter topic.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// An event older than this (by its timestamp) is not tried again.
    pub max_record_age_ms: Option<u64>,
    /// Split a batch that fails as a whole in halves to find the failing events.
    pub bisect: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: FN_DEFAULT_MAX_ATTEMPTS,
            backoff_initial_ms: FN_RETRY_BACKOFF_INITIAL_MS,
            backoff_max_ms: FN_RETRY_BACKOFF_MAX_MS,
            max_record_age_ms: None,
            bisect: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(30);
        self.backoff_initial_ms.saturating_mul(1 << shift).min(self.backoff_max_ms)
    }
}

/// A function's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub runtime: RuntimeSpec,
    pub trigger: Trigger,
    /// The default topic of the function's outputs.
    #[serde(default)]
    pub output: Option<String>,
    /// The dead-letter topic; default `<name>-dlq`.
    #[serde(default)]
    pub dlq: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a worker waits to fill a batch before it invokes with fewer events.
    #[serde(default)]
    pub batch_window_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// In order per partition (the default); `false` allows one batch per key in flight, so
    /// a partition's events of different keys run concurrently.
    #[serde(default = "yes")]
    pub ordered: bool,
    /// Workers idle for this long stop.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Set by the server on deploy: 1, 2, ...
    #[serde(default)]
    pub version: u64,
}

fn default_batch_size() -> usize {
    FN_DEFAULT_BATCH_SIZE
}
fn default_timeout_ms() -> u64 {
    FN_DEFAULT_TIMEOUT_MS
}
fn default_memory_mb() -> u32 {
    FN_DEFAULT_MEMORY_MB
}
fn default_max_concurrency() -> u32 {
    FN_DEFAULT_MAX_CONCURRENCY
}
fn default_idle_ms() -> u64 {
    FN_DEFAULT_IDLE_MS
}
fn yes() -> bool {
    true
}

impl FunctionSpec {
    /// A spec with every option at its default.
    pub fn new(name: &str, runtime: RuntimeSpec, trigger: Trigger) -> FunctionSpec {
        FunctionSpec {
            name: name.to_string(),
            runtime,
            trigger,
            output: None,
            dlq: None,
            batch_size: FN_DEFAULT_BATCH_SIZE,
            batch_window_ms: 0,
            timeout_ms: FN_DEFAULT_TIMEOUT_MS,
            memory_mb: FN_DEFAULT_MEMORY_MB,
            max_concurrency: FN_DEFAULT_MAX_CONCURRENCY,
            ordered: true,
            idle_ms: FN_DEFAULT_IDLE_MS,
            retry: RetryPolicy::default(),
            version: 0,
        }
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq.clone().unwrap_or_else(|| format!("{}-dlq", self.name))
    }

    /// The consumer group of a topic trigger.
    pub fn group(&self) -> String {
        match &self.trigger {
            Trigger::Topic { group: Some(g), .. } => g.clone(),
            _ => format!("freshet-fn-{}", self.name),
        }
    }

    /// Checks names and limits; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!("invalid function name '{}': use 1 to 100 letters, digits, '-' and '_'", self.name));
        }
        let topic = |what: &str, t: &str| {
            freshet_common::validate_topic_name(t).map_err(|e| format!("invalid {what} topic '{t}': {e}"))
        };
        if let Some(o) = &self.output {
            topic("output", o)?;
        }
        topic("dead-letter", &self.dlq_topic())?;
        match &self.trigger {
            Trigger::Topic { topic: t, filter, .. } => {
                topic("trigger", t)?;
                if let Some(f) = filter {
                    crate::filter::Filter::new(f).map_err(|e| format!("invalid filter: {e}"))?;
                }
            }
            Trigger::Http => {}
            Trigger::Cron { expr } => {
                crate::cron::Schedule::parse(expr).map_err(|e| format!("invalid cron expression '{expr}': {e}"))?;
            }
        }
        match &self.runtime {
            RuntimeSpec::Wasm => {}
            RuntimeSpec::Process { command, .. } if command.trim().is_empty() => {
                return Err("a process function needs a command".into())
            }
            RuntimeSpec::Process { .. } => {}
            RuntimeSpec::Http { url, tls_ca, .. } => {
                let https = url.starts_with("https://");
                if !https && !url.starts_with("http://") {
                    return Err(format!("invalid function URL '{url}': it must start with http:// or https://"));
                }
                if let Some(pem) = tls_ca {
                    if !https {
                        return Err(format!("a TLS CA is given but the function URL '{url}' is not https://"));
                    }
                    crate::http::add_ca_pem(&mut rustls::RootCertStore::empty(), pem)?;
                }
            }
        }
        if self.batch_size == 0 || self.batch_size > FN_MAX_BATCH_SIZE {
            return Err(format!("batch size must be between 1 and {FN_MAX_BATCH_SIZE}"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > FN_MAX_TIMEOUT_MS {
            return Err(format!("timeout must be between 1 and {FN_MAX_TIMEOUT_MS} ms"));
        }
        if self.memory_mb == 0 || self.memory_mb > FN_MAX_MEMORY_MB {
            return Err(format!("memory limit must be between 1 and {FN_MAX_MEMORY_MB} MB"));
        }
        if self.max_concurrency == 0 || self.max_concurrency > FN_MAX_CONCURRENCY {
            return Err(format!("max concurrency must be between 1 and {FN_MAX_CONCURRENCY}"));
        }
        if self.retry.max_attempts == 0 {
            return Err("max attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// A deployed function: its spec and, for WASM, the module's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub spec: FunctionSpec,
    pub code: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_function_urls_and_their_ca() {
        let spec = |url: &str, tls_ca: Option<&str>| {
            let runtime =
                RuntimeSpec::Http { url: url.into(), mode: Default::default(), tls_ca: tls_ca.map(Into::into) };
            FunctionSpec::new("f", runtime, Trigger::Http)
        };
        assert_eq!(spec("http://127.0.0.1:8080/fn", None).validate(), Ok(()));
        assert_eq!(spec("https://example.com/fn", None).validate(), Ok(()));
        let other = spec("ftp://example.com/fn", None).validate().unwrap_err();
        assert!(other.contains("must start with http:// or https://"), "{other}");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem();
        assert_eq!(spec("https://localhost/fn", Some(&cert)).validate(), Ok(()));
        let plain = spec("http://localhost/fn", Some(&cert)).validate().unwrap_err();
        assert!(plain.contains("not https://"), "{plain}");
        let junk = spec("https://localhost/fn", Some("not a certificate")).validate().unwrap_err();
        assert!(junk.contains("no PEM certificate"), "{junk}");
        // A spec without a CA is stored as before (older definitions still load).
        let json = serde_json::to_value(&spec("https://x/", None).runtime).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "http", "url": "https://x/", "mode": "binary"}));
    }
}
