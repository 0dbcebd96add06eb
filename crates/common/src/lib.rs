//! Names, limits and topic configuration shared by every Freshet crate.
//!
//! Nothing here does I/O. Every numeric limit of the system is named in [`limits`], so a reader
//! can see them all in one place.

pub mod config;
pub mod failpoint;
pub mod limits;
pub mod partitioner;
pub mod topic;
pub mod topics;

pub use config::{ConfigError, ConfigKind, TopicConfig, TOPIC_CONFIGS};
pub use topic::{validate_topic_name, TopicNameError};
