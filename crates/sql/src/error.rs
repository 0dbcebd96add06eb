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
#[error("{context}{}{message}", prefix(*kind, *pos, context))]
pub struct SqlError {
    pub kind: ErrorKind,
    pub message: String,
    pub pos: Option<Pos>,
    /// The phase that failed, as ksqlDB words it before the position: empty, [`BUILDING`] or
    /// [`PREPARING`].
    pub context: &'static str,
}

/// Building the statement from the text failed (names of sources, WITH properties).
pub const BUILDING: &str = "Failed to prepare statement: ";
/// Resolving the statement's names failed (ambiguous columns).
pub const PREPARING: &str = "Exception while preparing statement: ";

impl SqlError {
    pub fn parse(pos: Option<Pos>, message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Parse, message: message.into(), pos, context: "" }
    }

    pub fn statement(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Statement, message: message.into(), pos: None, context: "" }
    }

    pub fn at(mut self, pos: Pos) -> SqlError {
        if self.pos.is_none() && pos != Pos::default() {
            self.pos = Some(pos);
        }
        self
    }

    /// Marks the phase that failed (see [`BUILDING`], [`PREPARING`]).
    pub fn in_phase(mut self, context: &'static str) -> SqlError {
        self.context = context;
        self
    }

    pub fn processing(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Processing, message: message.into(), pos: None, context: "" }
    }

    pub fn server(message: impl Into<String>) -> SqlError {
        SqlError { kind: ErrorKind::Server, message: message.into(), pos: None, context: "" }
    }
}

/// ksqlDB's wording of a position: `line 2:13: Syntax Error` for a text that does not parse,
/// `line 2:13: ` for a text that parses but cannot be built into a statement (a literal out of
/// range: [`BUILDING`]), `Line: 2, Col: 13: ` for a statement that cannot run.
fn prefix(kind: ErrorKind, pos: Option<Pos>, context: &str) -> String {
    match (kind, pos) {
        (ErrorKind::Parse, Some(p)) if context == BUILDING => format!("{p}: "),
        (ErrorKind::Parse, Some(p)) => format!("{p}: Syntax Error\n"),
        (ErrorKind::Parse, None) => "Syntax Error\n".to_string(),
        // A statement that cannot be built is reported without a position.
        (_, Some(_)) if context == BUILDING => String::new(),
        (_, Some(p)) => format!("Line: {}, Col: {}: ", p.line, p.column),
        (_, None) => String::new(),
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
