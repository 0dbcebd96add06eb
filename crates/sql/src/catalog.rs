//! The metastore: streams, tables and types, with their schemas and formats.

use std::collections::BTreeMap;

use crate::ast::{SourceKind, WindowKind};
use crate::expr::Scope;
use crate::format::Serde;
use crate::types::{Field, SqlType};

/// Pseudo-columns every row carries after its own columns.
pub const ROWTIME: &str = "ROWTIME";
pub const ROWPARTITION: &str = "ROWPARTITION";
pub const ROWOFFSET: &str = "ROWOFFSET";
pub const WINDOWSTART: &str = "WINDOWSTART";
pub const WINDOWEND: &str = "WINDOWEND";

/// A header column: all headers (`HEADERS`, an ARRAY<STRUCT<KEY STRING, VALUE BYTES>>) or one
/// header's value (`HEADER('k')`, BYTES).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderColumn {
    pub field: Field,
    pub key: Option<String>,
}

/// A stream or a table.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub kind: SourceKind,
    pub topic: String,
    pub keys: Vec<Field>,
    pub values: Vec<Field>,
    pub headers: Vec<HeaderColumn>,
    pub key_serde: Serde,
    pub value_serde: Serde,
    /// Column whose value is the record's event time.
    pub timestamp: Option<String>,
    pub timestamp_format: Option<String>,
    /// Windowed key: the window type and size of the source's records.
    pub window: Option<WindowKind>,
    /// Id of the persistent query writing this source (CSAS/CTAS).
    pub writer: Option<String>,
    /// Read-only (CREATE SOURCE STREAM/TABLE).
    pub read_only: bool,
    pub sql: String,
}

impl SourceDef {
    /// The row layout of this source's records, columns qualified by `alias`.
    pub fn scope(&self, alias: &str) -> Scope {
        let mut s = Scope::default();
        for f in self.keys.iter().chain(&self.values) {
            s.push(Some(alias), &f.name, f.ty.clone());
        }
        for h in &self.headers {
            s.push(Some(alias), &h.field.name, h.field.ty.clone());
        }
        s.push(Some(alias), ROWTIME, SqlType::BigInt);
        s.push(Some(alias), ROWPARTITION, SqlType::Int);
        s.push(Some(alias), ROWOFFSET, SqlType::BigInt);
        if self.window.is_some() {
            s.push(Some(alias), WINDOWSTART, SqlType::BigInt);
            s.push(Some(alias), WINDOWEND, SqlType::BigInt);
        }
        s
    }

    /// The columns of `SELECT *` in a transient (pull or push) query: keys, window bounds,
    /// values, headers.
    pub fn transient_columns(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.keys.iter().map(|f| f.name.as_str()).collect();
        if self.window.is_some() {
            names.extend([WINDOWSTART, WINDOWEND]);
        }
        names.extend(self.values.iter().chain(self.headers.iter().map(|h| &h.field)).map(|f| f.name.as_str()));
        names
    }

    /// Number of real columns (keys, values, headers) before the pseudo-columns.
    pub fn column_count(&self) -> usize {
        self.keys.len() + self.values.len() + self.headers.len()
    }

    /// The schema the way DESCRIBE and the test cases' `post` sections write it.
    pub fn schema_string(&self) -> String {
        let mut parts = vec![];
        for k in &self.keys {
            parts.push(format!(
                "`{}` {} {}",
                k.name,
                k.ty,
                if self.kind == SourceKind::Table { "PRIMARY KEY" } else { "KEY" }
            ));
        }
        for v in &self.values {
            parts.push(format!("`{}` {}", v.name, v.ty));
        }
        for h in &self.headers {
            match &h.key {
                Some(k) => parts.push(format!("`{}` {} HEADER('{k}')", h.field.name, h.field.ty)),
                None => parts.push(format!("`{}` {} HEADERS", h.field.name, h.field.ty)),
            }
        }
        parts.join(", ")
    }
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub sources: BTreeMap<String, SourceDef>,
    pub types: BTreeMap<String, SqlType>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&SourceDef> {
        self.sources.get(name)
    }

    /// The sources reading or writing a topic.
    pub fn by_topic(&self, topic: &str) -> Vec<&SourceDef> {
        self.sources.values().filter(|s| s.topic == topic).collect()
    }
}

/// Whether a name is one of the pseudo-columns a user cannot define.
pub fn is_reserved_column(name: &str) -> bool {
    matches!(name, ROWTIME | ROWPARTITION | ROWOFFSET | WINDOWSTART | WINDOWEND)
}
