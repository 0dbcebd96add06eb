use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the log in {dir} refuses writes after a failed write or fsync ({reason}); it must be reopened")]
    Failed { dir: PathBuf, reason: String },
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    #[error("corrupt data in {path} at byte {pos}: {reason}")]
    Corrupt { path: PathBuf, pos: u64, reason: String },
    #[error("compaction rewrite abandoned: {0}")]
    CleanAborted(String),
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| LogError::Io { path: path.to_path_buf(), source })
    }
}
