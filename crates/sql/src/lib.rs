//! Streaming SQL in the ksqlDB dialect.
//!
//! Layers, bottom up: [`types`] and [`value`] (the data model), [`parser`] (statements into
//! [`ast`]), [`expr`] (type-checked, compiled expressions), [`functions`] (the scalar library),
//! [`format`] (record serialization), [`engine`] (catalog, planner, persistent queries), and
//! [`topics`] (the traits through which the engine reads and writes topics).

pub mod aggregate;
pub mod ast;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod explain;
pub mod expr;
pub mod format;
pub mod functions;
pub mod join;
pub mod materialized;
pub mod nexmark;
pub mod parser;
pub mod query;
pub mod state;
pub mod testcase;
pub mod time;
pub mod topics;
pub mod transient;
pub mod types;
pub mod value;

pub use error::{Result, SqlError};

/// Limits of the SQL engine, from the one place every limit is named.
pub mod limits {
    pub use freshet_common::limits::{
        SQL_MAX_COLLECT_ITEMS as MAX_COLLECT_ITEMS, SQL_MAX_HISTOGRAM_BUCKETS as MAX_HISTOGRAM_BUCKETS,
        SQL_MAX_TASK_IDLE_MS as MAX_TASK_IDLE_MS, SQL_POLL_BATCH as POLL_BATCH,
    };
}
