//! The [`Runtime`] trait: one worker's instance of a function (a WASM instance, a child process,
//! an HTTP client), and the [`RuntimeFactory`] that makes instances as the pool grows.

use std::sync::Arc;

use crate::event::{Event, Reply};

/// Why an invocation failed as a whole. Every variant is a function error: it is retried and
/// finally dead-lettered, never a crash of the server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// The function ran past its time limit.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// A WASM trap, a memory limit, a process that exited or wrote garbage, a non-2xx answer.
    #[error("{0}")]
    Failed(String),
    /// The function cannot be instantiated at all (bad module, missing command).
    #[error("cannot start the function: {0}")]
    Start(String),
}

/// Where a function's own output (a process's stderr, a WASM guest's stdout and stderr) goes:
/// `(stream, line)`, stream being "stdout" or "stderr". The server writes it to the logs topic.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// One instance of a function, owned by one worker thread at a time.
pub trait Runtime: Send {
    /// Invokes the function on a batch (at least one event). `Err` fails the whole batch;
    /// `Reply::failed` fails single events.
    fn invoke(&mut self, batch: &[Event]) -> Result<Reply, InvokeError>;

    /// Whether this instance can be invoked again. After a failed invocation a worker drops an
    /// unhealthy instance (a trapped WASM instance, a dead process) and makes a new one.
    fn healthy(&self) -> bool {
        true
    }
}

/// Makes instances of one deployed version of a function.
pub trait RuntimeFactory: Send + Sync {
    /// A new instance (a cold start).
    fn instantiate(&self) -> Result<Box<dyn Runtime>, InvokeError>;
}
