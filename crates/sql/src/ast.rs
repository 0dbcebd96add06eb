//! The syntax tree of ksqlDB statements, with names as written (unquoted names upper-cased).

use std::collections::BTreeMap;

use crate::types::SqlType;
use crate::value::Value;

/// A position in the statement text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Stream,
    Table,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateSource(CreateSource),
    CreateAs(CreateAs),
    InsertInto {
        target: String,
        query: Box<Select>,
        properties: BTreeMap<String, Value>,
        /// Where the target's name is.
        target_pos: Pos,
    },
    InsertValues {
        target: String,
        columns: Option<Vec<String>>,
        values: Vec<Expr>,
        pos: Pos,
    },
    CreateType {
        name: String,
        ty: SqlType,
        if_not_exists: bool,
    },
    DropType {
        name: String,
        if_exists: bool,
    },
    Drop {
        kind: SourceKind,
        name: String,
        if_exists: bool,
        delete_topic: bool,
    },
    /// `ALTER STREAM|TABLE name ADD [COLUMN] name type, ...`: new value columns.
    Alter {
        kind: SourceKind,
        name: String,
        columns: Vec<crate::types::Field>,
    },
    /// `TERMINATE id` or `TERMINATE ALL` (None).
    Terminate(Option<String>),
    Show(Show),
    Describe {
        name: Option<String>,
        extended: bool,
        functions: bool,
    },
    Explain(ExplainTarget),
    /// `PRINT topic [FROM BEGINNING] [INTERVAL|SAMPLE n] [LIMIT n]`: the topic name as written
    /// (quoted names keep their case).
    Print {
        topic: String,
        from_beginning: bool,
        /// Print every n-th record.
        interval: Option<u64>,
        limit: Option<u64>,
    },
    Set {
        name: String,
        value: String,
    },
    Unset(String),
    Define {
        name: String,
        value: String,
    },
    Undefine(String),
    Select(Box<Select>),
    Assert,
}

/// What `EXPLAIN` explains.
#[derive(Debug, Clone)]
pub enum ExplainTarget {
    /// A running query, by id (as written).
    Query(String),
    /// A SELECT, CREATE ... AS SELECT or INSERT INTO ... SELECT, planned without running it.
    Statement(Box<Statement>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Streams { extended: bool },
    Tables { extended: bool },
    Queries { extended: bool },
    Topics { extended: bool },
    Functions,
    Types,
    Properties,
    Variables,
}

#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub key: bool,
    pub primary_key: bool,
    /// `HEADERS` (all headers) or `HEADER('k')`.
    pub header: Option<Option<String>>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct CreateSource {
    pub kind: SourceKind,
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub source: bool,
    pub columns: Vec<ColumnDef>,
    pub properties: BTreeMap<String, Value>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct CreateAs {
    pub kind: SourceKind,
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub properties: BTreeMap<String, Value>,
    pub query: Box<Select>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum SelectItem {
    /// `*` or `alias.*`.
    Wildcard(Option<String>),
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
    /// `struct_expr->*`: every field of a struct, each as a column named after the field.
    StructAll(Expr),
}

#[derive(Debug, Clone)]
pub struct SourceRef {
    pub name: String,
    pub alias: Option<String>,
    pub pos: Pos,
}

impl SourceRef {
    pub fn alias(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

#[derive(Debug, Clone)]
pub struct Join {
    pub kind: JoinKind,
    pub source: SourceRef,
    /// `WITHIN (before, after)` in milliseconds.
    pub within: Option<(i64, i64)>,
    pub grace: Option<i64>,
    pub on: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Hopping { size: i64, advance: i64 },
    Session { gap: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub retention: Option<i64>,
    pub grace: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    Changes,
    Final,
}

#[derive(Debug, Clone)]
pub struct Select {
    pub items: Vec<SelectItem>,
    pub from: SourceRef,
    pub joins: Vec<Join>,
    pub window: Option<WindowSpec>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub partition_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub emit: Option<Emit>,
    pub limit: Option<u64>,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinaryOp {
    /// `=`, `<>`, `<`, `<=`, `>`, `>=`.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq)
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Concat => "||",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// An expression as written.
#[derive(Debug, Clone)]
pub enum Expr {
    Literal(Value),
    /// A decimal literal keeps its text to know its precision.
    Column {
        qualifier: Option<String>,
        name: String,
        pos: Pos,
    },
    /// `expr->field`.
    Field(Box<Expr>, String),
    /// `expr[index]` (1-based for arrays; negative counts from the end) or `map[key]`.
    Subscript(Box<Expr>, Box<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    IsDistinct {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<char>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, SqlType),
    Function {
        name: String,
        args: Vec<Expr>,
        /// `COUNT(*)`.
        star: bool,
        distinct: bool,
        pos: Pos,
    },
    Lambda {
        params: Vec<String>,
        body: Box<Expr>,
    },
    Array(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Struct(Vec<(String, Expr)>),
}

impl Expr {
    /// Visits this expression and every sub-expression, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Literal(_) | Expr::Column { .. } => {}
            Expr::Field(e, _) | Expr::Unary(_, e) | Expr::Cast(e, _) => e.walk(f),
            Expr::IsNull { expr, .. } => expr.walk(f),
            Expr::Subscript(a, b) | Expr::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f)
            }
            Expr::IsDistinct { left, right, .. } => {
                left.walk(f);
                right.walk(f)
            }
            Expr::Between { expr, low, high, .. } => {
                expr.walk(f);
                low.walk(f);
                high.walk(f)
            }
            Expr::InList { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f))
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk(f);
                pattern.walk(f)
            }
            Expr::Case { operand, whens, otherwise } => {
                if let Some(o) = operand {
                    o.walk(f)
                }
                for (w, t) in whens {
                    w.walk(f);
                    t.walk(f)
                }
                if let Some(o) = otherwise {
                    o.walk(f)
                }
            }
            Expr::Function { args, .. } | Expr::Array(args) => args.iter().for_each(|e| e.walk(f)),
            Expr::Lambda { body, .. } => body.walk(f),
            Expr::Map(entries) => {
                for (k, v) in entries {
                    k.walk(f);
                    v.walk(f)
                }
            }
            Expr::Struct(fields) => fields.iter().for_each(|(_, e)| e.walk(f)),
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

impl std::fmt::Display for Expr {
    /// ksqlDB's canonical text of an expression (also used to compare expressions).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Literal(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Literal(Value::Null) => f.write_str("null"),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Column { qualifier, name, .. } => match qualifier {
                Some(q) => write!(f, "{q}.{name}"),
                None => f.write_str(name),
            },
            Expr::Field(b, field) => write!(f, "{b}->{field}"),
            Expr::Subscript(b, i) => write!(f, "{b}[{i}]"),
            Expr::Unary(UnaryOp::Not, e) => write!(f, "(NOT {e})"),
            Expr::Unary(UnaryOp::Neg, e) => write!(f, "-{e}"),
            Expr::Binary(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::IsNull { expr, negated } => {
                write!(f, "({expr} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            Expr::IsDistinct { left, right, negated } => {
                write!(f, "({left} IS {}DISTINCT FROM {right})", if *negated { "NOT " } else { "" })
            }
            Expr::Between { expr, low, high, negated } => {
                write!(f, "({expr} {}BETWEEN {low} AND {high})", if *negated { "NOT " } else { "" })
            }
            Expr::InList { expr, list, negated } => {
                write!(f, "({expr} {}IN ({}))", if *negated { "NOT " } else { "" }, join(list))
            }
            Expr::Like { expr, pattern, escape, negated } => {
                write!(f, "({expr} {}LIKE {pattern}", if *negated { "NOT " } else { "" })?;
                if let Some(c) = escape {
                    write!(f, " ESCAPE '{c}'")?;
                }
                f.write_str(")")
            }
            Expr::Case { operand, whens, otherwise } => {
                f.write_str("(CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in whens {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(o) = otherwise {
                    write!(f, " ELSE {o}")?;
                }
                f.write_str(" END)")
            }
            Expr::Cast(e, t) => write!(f, "CAST({e} AS {t})"),
            Expr::Function { name, args, star, .. } => {
                if *star {
                    write!(f, "{name}(*)")
                } else {
                    write!(f, "{name}({})", join(args))
                }
            }
            Expr::Lambda { params, body } => {
                if params.len() == 1 {
                    write!(f, "({} => {body})", params[0])
                } else {
                    write!(f, "(({}) => {body})", params.join(", "))
                }
            }
            Expr::Array(items) => write!(f, "ARRAY[{}]", join(items)),
            Expr::Map(entries) => {
                let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:={v}")).collect();
                write!(f, "MAP({})", parts.join(", "))
            }
            Expr::Struct(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:={v}")).collect();
                write!(f, "STRUCT({})", parts.join(", "))
            }
        }
    }
}
