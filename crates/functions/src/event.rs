//! What a function receives (a batch of [`Event`]s) and returns (a [`Reply`]).

use std::sync::Arc;

use bytes::Bytes;

/// One input event: a record of the trigger topic with its position, or the synthetic event of
/// an HTTP or timer trigger (topic "", partition and offset -1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Shared by the events of a batch (one allocation per read, not per event).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Slices of the read buffer (no copy per event).
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One record a function returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// The topic to write to; `None` means the function's `--output` topic.
    pub topic: Option<String>,
    /// `Bytes`, so that a runtime can hand out slices of one copy of its reply (no allocation
    /// per output) and the host can write them without copying again.
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A failed event of a batch that otherwise succeeded (a partial-batch failure).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The event's index in the invoked batch.
    pub index: usize,
    pub error: String,
}

/// What an invocation returned: its outputs and the events it failed (the rest succeeded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    pub outputs: Vec<Output>,
    pub failed: Vec<Failure>,
}
