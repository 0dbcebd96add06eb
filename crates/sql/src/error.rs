//! Errors of the SQL engine: every one says what is wrong in words a user can act on, and where.

use crate::ast::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not a statement of the dialect.
    Parse,
    /// The statement parses but cannot run: unknown names, type errors, unsupported features.
    Statement,
    /// A record failed while a query processed it (goes to the processing log).
    Processing,
    /// Something outside the statement failed (topics, storage).
    Server,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{}{}{message}",
    pos.map(|p| format!("{p}: ")).unwrap_or_default(),
    if *kind == ErrorKind::Parse { "Syntax Error\n" } else { "" }
)]
pub struct SqlError {
    pub kind: ErrorKind,
    pub message: String,
    pub pos: Option<Pos>,
}

impl SqlError {
    pub fn parse(pos: Option<Pos>, message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Parse, message: message.into(), pos }
    }

    pub fn statement(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Statement, message: message.into(), pos: None }
    }

    pub fn at(mut self, pos: Pos) -> SqlError {
        if self.pos.is_none() && pos != Pos::default() {
            self.pos = Some(pos);
        }
        self
    }

    pub fn processing(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Processing, message: message.into(), pos: None }
    }

    pub fn server(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Server, message: message.into(), pos: None }
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Shorthand for a statement error with a formatted message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::SqlError::statement(format!($($arg)*)))
    };
}

impl From<freshet_common::topics::TopicError> for SqlError {
    fn from(e: freshet_common::topics::TopicError) -> SqlError {
        SqlError::server(e.0)
    }
}
