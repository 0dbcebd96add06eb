//! Freshet's storage engine: one [`Log`] per partition, a directory of append-only segment files
//! holding Kafka v2 record batches exactly as they are served, each with a sparse offset index and
//! a time index.
//!
//! Architecture invariants:
//! - no tokio, no sockets, no Kafka API versions: this crate knows the record batch format and
//!   nothing of the protocol around it;
//! - every byte of I/O goes through [`fs::Fs`], so crash tests can run it on [`sim::SimFs`];
//! - an offset is acknowledged as durable only after the fdatasync that covers it returned
//!   success; after any failed write or fsync the log refuses writes until reopened.

pub mod batch;
mod clean;
mod error;
pub mod fs;
mod index;
mod log;
mod pool;
mod segment;
pub mod sim;

pub use crate::log::{
    AppendInfo, Log, LogConfig, ReadChunk, ReadPlan, ReadStart, RecoveryReport, RetentionReport, SyncTicket,
};
pub use batch::{BatchError, BatchHeader};
pub use clean::{CleanPlan, Cleaned};
pub use error::{LogError, Result};
