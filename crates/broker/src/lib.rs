//! Freshet's broker: the Kafka APIs over the storage engine.
//!
//! [`Broker::handle`] takes one request frame (without its length prefix) and returns a future
//! of the response frame. The synchronous part of a request runs inside `handle`: decoding, and
//! for Produce the checks and the queueing of each batch on its partition's append queue, so the
//! batches of one connection are appended in the order its requests arrived. The append itself
//! runs on the partition's writer (on the blocking pool); waiting for it, for an fsync or for
//! Fetch data happens in the returned future.
//!
//! Architecture invariant: no sockets here; `freshet-server` owns the network.

mod apis;
mod broker;
pub mod cleaner;
mod error;
pub mod groups;
mod partition;
pub mod producers;
mod topics;
pub mod txn;

pub use apis::{supported_apis, FrameError, Reply, Responder};
pub use broker::{is_internal, now_ms, Broker, BrokerConfig, BrokerError, INTERNAL_TOPICS};
pub use partition::{AppendResult, Appended, Partition};
pub use topics::Topic;
