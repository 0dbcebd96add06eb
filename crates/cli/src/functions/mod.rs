//! Functions inside `freshet serve`: the [`freshet_functions::host::Host`] over the server's
//! topics, the runtime loader (WASM from `freshet-fn-wasm`, process and HTTP from
//! `freshet-functions`), the HTTP API ([`http`]) and the `freshet fn` commands ([`cli`]).

pub mod cli;
pub mod http;

use std::sync::Arc;

use freshet_common::config::TopicConfig;
use freshet_common::limits::FN_MAX_CODE_BYTES;
use freshet_functions::host::{FnTopics, Host, Loader, FUNCTIONS_TOPIC, LOGS_TOPIC};
use freshet_functions::spec::{Deployment, RuntimeSpec};
use freshet_functions::{InvokeError, LogSink, RuntimeFactory};

use crate::sql::SqlTopics;

/// Loads every kind of function.
pub struct RuntimeLoader;

impl Loader for RuntimeLoader {
    fn load(&self, d: &Deployment, log: LogSink) -> Result<Arc<dyn RuntimeFactory>, InvokeError> {
        let s = &d.spec;
        Ok(match &s.runtime {
            RuntimeSpec::Wasm => Arc::new(freshet_fn_wasm::WasmFactory::new(&d.code, s.timeout_ms, s.memory_mb, log)?),
            RuntimeSpec::Process { command, env } => {
                Arc::new(freshet_functions::process::ProcessFactory::new(command, env, s.timeout_ms, log))
            }
            RuntimeSpec::Http { url, mode, tls_ca } => Arc::new(
                freshet_functions::http::HttpFactory::new(url, *mode, s.timeout_ms, &s.name, tls_ca.as_deref())
                    .map_err(InvokeError::Start)?,
            ),
        })
    }
}

/// Creates the functions' topics (definitions compacted, large enough for a module) and opens
/// the host, which starts every deployed function. Blocking: call it off the async runtime.
pub fn open_host<T: SqlTopics + FnTopics + 'static>(topics: Arc<T>) -> anyhow::Result<Arc<Host>> {
    if topics.partitions(FUNCTIONS_TOPIC).is_none() {
        // Base64 makes code a third larger; leave room for the spec.
        let max = (FN_MAX_CODE_BYTES / 3 * 4 + (1 << 20)).to_string();
        let config = TopicConfig::from_pairs([
            ("cleanup.policy", "compact"),
            ("flush.messages", "1"),
            ("max.message.bytes", &max),
        ])
        .map_err(|e| anyhow::anyhow!("functions topic config: {e}"))?;
        topics.create_topic_with(FUNCTIONS_TOPIC, 1, config)?;
    }
    if topics.partitions(LOGS_TOPIC).is_none() {
        let config = TopicConfig::from_pairs([("retention.ms", "604800000")])
            .map_err(|e| anyhow::anyhow!("function logs topic config: {e}"))?;
        topics.create_topic_with(LOGS_TOPIC, 1, config)?;
    }
    Ok(Host::open(topics, Arc::new(RuntimeLoader))?)
}
