//! The engine: executes statements against the catalog, plans persistent queries and runs them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::aggregate;
use crate::ast::*;
use crate::bail;
use crate::catalog::*;
use crate::error::{Result, SqlError};
use crate::expr::{CExpr, Compiler, Env, Scope};
use crate::format::{Format, Serde};
use crate::functions;
use crate::parser::{self, TypeRegistry};
use crate::query::{AggregatePlan, Plan, ProcessingError, Query};
use crate::topics::{Record, Topics};
use crate::types::{Field, SqlType};
use crate::value::Value;

/// What a statement did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A message for the user (DDL, SET, TERMINATE...).
    Message(String),
    /// A persistent query was started.
    QueryStarted { id: String, sink: String },
    /// A SELECT to answer as a pull or push query (run by the caller).
    Select(Box<Select>),
    /// A listing (SHOW / DESCRIBE) as JSON in ksqlDB's REST shapes.
    Listing(serde_json::Value),
}

pub struct Engine {
    pub catalog: Catalog,
    topics: Arc<dyn Topics>,
    pub queries: BTreeMap<String, Query>,
    query_seq: u64,
    pub properties: BTreeMap<String, String>,
    pub variables: BTreeMap<String, String>,
    pub processing_log: Vec<ProcessingError>,
    /// Create a source's topic when it does not exist (test harness), instead of refusing.
    pub auto_create_topics: bool,
    /// Test harness: persistent queries keep their state in store files in this directory,
    /// read one record per step, and after each step commit their state changes to their
    /// changelog and restore the state from file and changelog, as after a restart.
    pub restore_every_step: Option<std::path::PathBuf>,
    /// Partitions of a topic created because of `auto_create_topics`.
    pub default_partitions: i32,
    /// Planning a transient (push) query: every projection item becomes an output column in
    /// SELECT order and no key column is required in the projection.
    pub(crate) transient: std::cell::Cell<bool>,
    /// The current contents of queryable tables, for pull queries (in memory unless set to
    /// [`crate::materialized::Materialized::on_disk`]).
    pub materialized: crate::materialized::Materialized,
}

fn prop_string(props: &BTreeMap<String, Value>, name: &str) -> Option<String> {
    props.get(name).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl Engine {
    pub fn new(topics: Arc<dyn Topics>) -> Engine {
        Engine {
            catalog: Catalog::default(),
            topics,
            queries: BTreeMap::new(),
            query_seq: 0,
            properties: BTreeMap::new(),
            variables: BTreeMap::new(),
            processing_log: vec![],
            auto_create_topics: false,
            restore_every_step: None,
            default_partitions: 1,
            transient: std::cell::Cell::new(false),
            materialized: Default::default(),
        }
    }

    pub fn topics(&self) -> &Arc<dyn Topics> {
        &self.topics
    }

    fn types(&self) -> TypeRegistry {
        self.catalog.types.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Runs a script of statements; stops at the first error.
    pub fn execute(&mut self, script: &str) -> Result<Vec<Outcome>> {
        let mut out = vec![];
        for text in parser::split_statements(script) {
            out.push(self.execute_one(&text)?);
        }
        Ok(out)
    }

    /// Substitutes `${name}` variables defined with DEFINE.
    fn substitute(&self, text: &str) -> String {
        let mut s = text.to_string();
        for (k, v) in &self.variables {
            s = s.replace(&format!("${{{k}}}"), v);
            s = s.replace(&format!("${{{}}}", k.to_ascii_lowercase()), v);
        }
        s
    }

    pub fn execute_one(&mut self, text: &str) -> Result<Outcome> {
        let text = self.substitute(text);
        let stmt = parser::parse_statement(&text, &self.types())?;
        self.run_statement(stmt, &text)
    }

    fn run_statement(&mut self, stmt: Statement, text: &str) -> Result<Outcome> {
        match stmt {
            Statement::CreateSource(c) => self.create_source(c, text),
            Statement::CreateAs(c) => self.create_as(c, text),
            Statement::InsertInto { target, query, target_pos, .. } => {
                if self.catalog.get(&target).is_none() {
                    return Err(SqlError::statement(format!("Source `{target}` does not exist.")).at(target_pos));
                }
                self.insert_into(&target, *query, text)
            }
            Statement::InsertValues { target, columns, values, pos } => {
                self.insert_values(&target, columns, values).map_err(|e| e.at(pos))
            }
            Statement::CreateType { name, ty, if_not_exists } => {
                if self.catalog.types.contains_key(&name) {
                    if if_not_exists {
                        return Ok(Outcome::Message(format!("Type {name} already exists")));
                    }
                    return Err(SqlError::statement(format!(
                        "Cannot register custom type '{name}' since it is already registered with type: {}",
                        self.catalog.types[&name]
                    )));
                }
                self.catalog.types.insert(name.clone(), ty);
                Ok(Outcome::Message(format!("Registered custom type with name '{name}'")))
            }
            Statement::DropType { name, if_exists } => {
                if self.catalog.types.remove(&name).is_none() && !if_exists {
                    return Err(SqlError::statement(format!("Type {name} does not exist.")));
                }
                Ok(Outcome::Message(format!("Dropped type '{name}'")))
            }
            Statement::Drop { kind, name, if_exists, delete_topic } => self.drop(kind, &name, if_exists, delete_topic),
            Statement::Alter { kind, name, columns } => self.alter(kind, &name, columns),
            Statement::Terminate(id) => {
                match id {
                    None => self.queries.clear(),
                    Some(id) => {
                        let id = id.to_ascii_uppercase();
                        if self.queries.remove(&id).is_none() {
                            return Err(SqlError::statement(format!("Unknown queryId: {id}")));
                        }
                        for s in self.catalog.sources.values_mut() {
                            if s.writer.as_deref() == Some(id.as_str()) {
                                s.writer = None;
                            }
                        }
                    }
                }
                Ok(Outcome::Message("Query terminated.".into()))
            }
            Statement::Set { name, value } => {
                self.properties.insert(name, value);
                Ok(Outcome::Message("Property set".into()))
            }
            Statement::Unset(name) => {
                self.properties.remove(&name);
                Ok(Outcome::Message("Property unset".into()))
            }
            Statement::Define { name, value } => {
                self.variables.insert(name, value);
                Ok(Outcome::Message("Variable defined".into()))
            }
            Statement::Undefine(name) => {
                self.variables.remove(&name);
                Ok(Outcome::Message("Variable undefined".into()))
            }
            Statement::Select(s) => Ok(Outcome::Select(s)),
            Statement::Assert => Ok(Outcome::Message("Assertion passed".into())),
            Statement::Show(_) | Statement::Describe { .. } | Statement::Explain(_) | Statement::Print { .. } => {
                Err(SqlError::statement("this statement is served by the REST API"))
            }
        }
    }

    /// What to do when a CREATE names an existing source: `Some` answers the statement
    /// (IF NOT EXISTS), an error refuses it, `None` goes on (OR REPLACE, or a new name).
    fn existing_source(
        &self,
        kind: SourceKind,
        name: &str,
        if_not_exists: bool,
        or_replace: bool,
    ) -> Result<Option<Outcome>> {
        let Some(existing) = self.catalog.get(name) else { return Ok(None) };
        if if_not_exists {
            return Ok(Some(Outcome::Message(format!("{} {name} already exists", kind.name()))));
        }
        if !or_replace {
            return Err(SqlError::statement(format!(
                "Cannot add {} '{name}': A {} with the same name already exists",
                kind.name().to_ascii_lowercase(),
                existing.kind.name().to_ascii_lowercase()
            )));
        }
        Ok(None)
    }

    fn create_source(&mut self, c: CreateSource, text: &str) -> Result<Outcome> {
        let what = c.kind.name().to_ascii_lowercase();
        check_format_props(&c.properties)?;
        if c.or_replace && c.source {
            bail!("Cannot add {what} '{}': CREATE OR REPLACE is not supported on source {what}s.", c.name);
        }
        if let Some(done) = self.existing_source(c.kind, &c.name, c.if_not_exists, c.or_replace)? {
            return Ok(done);
        }
        if let Some(existing) = self.catalog.get(&c.name) {
            if existing.read_only || c.source {
                return Err(SqlError::statement(format!(
                    "Cannot add {what} '{}': CREATE OR REPLACE is not supported on source {what}s.",
                    c.name
                )));
            }
        }
        let props = &c.properties;
        let topic = prop_string(props, "KAFKA_TOPIC").ok_or_else(|| {
            SqlError::statement("Missing required property \"KAFKA_TOPIC\" which has no default value.")
        })?;
        let (key_serde, mut value_serde) = serdes_from_props(props, None, &self.properties)?;
        let mut keys = vec![];
        let mut values = vec![];
        let mut headers = vec![];
        let mut seen = HashSet::new();
        for col in &c.columns {
            if is_reserved_column(&col.name) {
                return Err(SqlError::statement(format!(
                    "'{}' is a reserved column name. You cannot use it as a name for a column.",
                    col.name
                ))
                .at(col.pos));
            }
            if !seen.insert(col.name.clone()) {
                return Err(SqlError::statement(format!("Duplicate column names: {}", col.name)).at(col.pos));
            }
            if col.key {
                if c.kind == SourceKind::Table && !col.primary_key {
                    return Err(SqlError::statement(format!(
                        "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.\nTables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints.",
                        col.name
                    ))
                    .at(col.pos));
                }
                if c.kind == SourceKind::Stream && col.primary_key {
                    return Err(SqlError::statement(format!(
                        "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.\nTables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints.",
                        col.name
                    ))
                    .at(col.pos));
                }
                check_key_type(&col.name, &col.ty)?;
                keys.push(Field { name: col.name.clone(), ty: col.ty.clone() });
            } else if let Some(h) = &col.header {
                let headers_type = SqlType::Array(Box::new(SqlType::Struct(vec![
                    Field { name: "KEY".into(), ty: SqlType::String },
                    Field { name: "VALUE".into(), ty: SqlType::Bytes },
                ])));
                match h {
                    None if col.ty != headers_type => {
                        return Err(SqlError::statement(format!(
                            "Invalid type for HEADERS column: expected {headers_type}, got {}",
                            col.ty
                        )))
                    }
                    Some(k) if col.ty != SqlType::Bytes => {
                        return Err(SqlError::statement(format!(
                            "Invalid type for HEADER('{k}') column: expected BYTES, got {}",
                            col.ty
                        )))
                    }
                    _ => {}
                }
                headers
                    .push(HeaderColumn { field: Field { name: col.name.clone(), ty: col.ty.clone() }, key: h.clone() });
            } else {
                values.push(Field { name: col.name.clone(), ty: col.ty.clone() });
            }
        }
        if c.kind == SourceKind::Table && keys.is_empty() {
            return Err(SqlError::statement("Tables require a PRIMARY KEY. Please define the PRIMARY KEY."));
        }
        if c.columns.is_empty() {
            return Err(SqlError::statement("The statement does not define any columns."));
        }
        key_serde.check(&keys, "key")?;
        value_serde.check(&values, "value")?;
        if let Some(w) = prop_string(props, "WRAP_SINGLE_VALUE") {
            let wrap = w.eq_ignore_ascii_case("true");
            if matches!(value_serde.format, Format::Kafka | Format::Delimited) && wrap {
                return Err(SqlError::statement(format!(
                    "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
                    value_serde.format.name()
                )));
            }
            if value_serde.format == Format::Kafka && wrap {
                return Err(SqlError::statement("Format 'KAFKA' does not support 'WRAP_SINGLE_VALUE' set to 'true'."));
            }
            if values.len() != 1 {
                return Err(SqlError::statement("'WRAP_SINGLE_VALUE' is only valid for single-field value schemas"));
            }
            value_serde.unwrapped = !wrap;
        }
        let window = window_from_props(props)?;
        let timestamp = prop_string(props, "TIMESTAMP").map(|t| t.to_ascii_uppercase());
        if let Some(ts) = &timestamp {
            check_timestamp_column(keys.iter().chain(&values), ts)?;
        }
        self.ensure_topic(&topic, props)?;
        let def = SourceDef {
            name: c.name.clone(),
            kind: c.kind,
            topic,
            keys,
            values,
            headers,
            key_serde,
            value_serde,
            timestamp,
            timestamp_format: prop_string(props, "TIMESTAMP_FORMAT"),
            window,
            writer: None,
            read_only: c.source,
            sql: text.to_string(),
        };
        self.catalog.sources.insert(c.name.clone(), def);
        Ok(Outcome::Message(format!("{} created", if c.kind == SourceKind::Stream { "Stream" } else { "Table" })))
    }

    fn ensure_topic(&mut self, topic: &str, props: &BTreeMap<String, Value>) -> Result<i32> {
        if let Some(p) = self.topics.partitions(topic) {
            return Ok(p);
        }
        let partitions = props.get("PARTITIONS").and_then(Value::as_i64);
        match partitions {
            Some(p) => {
                self.topics.create_topic(topic, p as i32)?;
                Ok(p as i32)
            }
            None if self.auto_create_topics => {
                self.topics.create_topic(topic, self.default_partitions)?;
                Ok(self.default_partitions)
            }
            None => Err(SqlError::statement(format!(
                "Topic '{topic}' does not exist. If you want to create a new topic for the stream/table please re-run the statement providing the required 'PARTITIONS' configuration in the WITH clause (and optionally 'REPLICAS'). For example: CREATE STREAM FOO (ID INT, VALUE STRING) WITH (KAFKA_TOPIC='{topic}', PARTITIONS=2, REPLICAS=1, FORMAT='JSON');"
            ))),
        }
    }

    /// Adds value columns to a stream or table declared with CREATE (not a query's sink, not a
    /// read-only source).
    fn alter(&mut self, kind: SourceKind, name: &str, columns: Vec<Field>) -> Result<Outcome> {
        let what = kind.name().to_ascii_lowercase();
        let Some(src) = self.catalog.get(name) else {
            bail!("Source {name} does not exist.");
        };
        if src.kind != kind {
            bail!("Incompatible data source type is {}, but statement was ALTER {}", src.kind.name(), kind.name());
        }
        if src.read_only {
            bail!("Cannot alter {what} '{name}': ALTER operations are not supported on source {what}s.");
        }
        if src.writer.is_some() {
            bail!("ALTER command is not supported for CREATE ... AS statements.");
        }
        if matches!(src.value_serde.format, Format::Kafka) {
            bail!("Schema cannot be altered for the KAFKA value format.");
        }
        let mut def = src.clone();
        for c in columns {
            if def.keys.iter().chain(&def.values).any(|f| f.name == c.name) {
                bail!("Cannot add column `{}` to schema. A column with the same name already exists.", c.name);
            }
            def.values.push(c);
        }
        def.value_serde.check(&def.values, "value")?;
        self.catalog.sources.insert(name.to_string(), def);
        Ok(Outcome::Message(format!("{} {name} altered.", kind.name())))
    }

    fn drop(&mut self, kind: SourceKind, name: &str, if_exists: bool, delete_topic: bool) -> Result<Outcome> {
        let Some(src) = self.catalog.get(name) else {
            if if_exists {
                return Ok(Outcome::Message(format!("Source `{name}` does not exist.")));
            }
            let noun = if kind == SourceKind::Stream { "Stream" } else { "Table" };
            return Err(SqlError::statement(format!("{noun} {name} does not exist.")));
        };
        if src.kind != kind {
            return Err(SqlError::statement(format!(
                "Incompatible data source type is {}, but statement was DROP {}",
                src.kind.name(),
                kind.name()
            )));
        }
        if delete_topic && src.read_only {
            bail!("Cannot delete topic for read-only source: {name}");
        }
        let readers: Vec<String> =
            self.queries.values().filter(|q| q.input.name == name).map(|q| q.id.clone()).collect();
        if !readers.is_empty() {
            return Err(SqlError::statement(format!(
                "Cannot drop {name}.\nThe following queries read from this source: [{}].\nYou need to terminate them before dropping {name}.",
                readers.join(", ")
            )));
        }
        let src = self.catalog.sources.remove(name).expect("checked above");
        self.materialized.forget(name);
        if let Some(w) = &src.writer {
            self.queries.remove(w);
        }
        if delete_topic {
            self.topics.delete_topic(&src.topic)?;
        }
        Ok(Outcome::Message(format!("Source `{name}` (topic: {}) was dropped.", src.topic)))
    }

    /// A sink's topic when its WITH clause names none: its name, after the
    /// `ksql.output.topic.name.prefix` property.
    fn sink_topic_default(&self, sink_name: &str) -> String {
        let prefix = self.properties.get("ksql.output.topic.name.prefix").map(String::as_str).unwrap_or("");
        format!("{prefix}{sink_name}")
    }

    fn new_query_id(&mut self, kind: &str, sink: &str) -> String {
        self.query_seq += 1;
        format!("{kind}_{sink}_{}", self.query_seq - 1)
    }

    fn create_as(&mut self, c: CreateAs, text: &str) -> Result<Outcome> {
        if let Some(done) = self.existing_source(c.kind, &c.name, c.if_not_exists, c.or_replace)? {
            return Ok(done);
        }
        if c.query.limit.is_some() {
            return Err(SqlError::statement(format!(
                "CREATE {} AS SELECT statements don't support LIMIT clause.",
                c.kind.name()
            )));
        }
        let planned = self.plan(&c.query, &c.name, &c.properties, None)?;
        if planned.kind != c.kind {
            let (produced, stmt) = match planned.kind {
                SourceKind::Table => ("TABLE", "CREATE TABLE AS SELECT"),
                SourceKind::Stream => ("STREAM", "CREATE STREAM AS SELECT"),
            };
            return Err(SqlError::statement(format!(
                "Invalid result type. Your SELECT query produces a {produced}. Please use {stmt} statement instead."
            )));
        }
        let mut output = planned.output;
        output.sql = text.to_string();
        if let Some(ts) = prop_string(&c.properties, "TIMESTAMP").map(|t| t.to_ascii_uppercase()) {
            check_timestamp_column(output.keys.iter().chain(&output.values), &ts)?;
            output.timestamp = Some(ts);
            output.timestamp_format = prop_string(&c.properties, "TIMESTAMP_FORMAT");
        }
        let partitions = self.topics.partitions(&planned.input.topic).unwrap_or(1);
        let out_partitions =
            c.properties.get("PARTITIONS").and_then(Value::as_i64).map(|p| p as i32).unwrap_or(partitions);
        if self.topics.partitions(&output.topic).is_none() {
            self.topics.create_topic(&output.topic, out_partitions)?;
        }
        let prefix = if c.kind == SourceKind::Stream { "CSAS" } else { "CTAS" };
        let id = match self.catalog.get(&c.name).and_then(|s| s.writer.clone()) {
            Some(existing) => existing,
            None => self.new_query_id(prefix, &c.name),
        };
        output.writer = Some(id.clone());
        self.catalog.sources.insert(c.name.clone(), output.clone());
        let rights = planned.rights;
        let mut q = Query::new(id.clone(), text.to_string(), planned.input, output, planned.plan, partitions);
        q.set_rights(rights);
        // A replaced query continues from where the old one stopped.
        if let Some(old) = self.queries.remove(&id) {
            q.offsets = old.offsets;
        }
        self.queries.insert(id.clone(), q);
        Ok(Outcome::QueryStarted { id, sink: c.name })
    }

    fn insert_into(&mut self, target: &str, query: Select, text: &str) -> Result<Outcome> {
        let Some(sink) = self.catalog.get(target).cloned() else {
            return Err(SqlError::statement(format!("{target} does not exist.")));
        };
        if sink.kind == SourceKind::Table {
            return Err(SqlError::statement(format!(
                "INSERT INTO can only be used to insert into a stream. {target} is a table."
            )));
        }
        if !sink.headers.is_empty() {
            return Err(SqlError::statement(format!("Cannot insert into {target} because it has header columns")));
        }
        if sink.read_only {
            return Err(SqlError::statement(format!(
                "Cannot insert into read-only {}: {target}",
                sink.kind.name().to_ascii_lowercase()
            )));
        }
        let planned = self.plan(&query, target, &BTreeMap::new(), Some(&sink))?;
        if planned.kind != sink.kind {
            return Err(SqlError::statement(format!(
                "Incompatible data sink and query result. Data sink ({target}) type is {} but select query result is {}.",
                sink.kind.name(),
                planned.kind.name()
            )));
        }
        let out = &planned.output;
        let same = out.keys.len() == sink.keys.len()
            && out.values.len() == sink.values.len()
            && out.keys.iter().zip(&sink.keys).all(|(a, b)| a.ty == b.ty)
            && out.values.iter().zip(&sink.values).all(|(a, b)| a.ty == b.ty && a.name == b.name);
        if !same {
            return Err(SqlError::statement(format!(
                "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                out.schema_string(),
                sink.schema_string()
            )));
        }
        let partitions = self.topics.partitions(&planned.input.topic).unwrap_or(1);
        let id = self.new_query_id("INSERTQUERY", target);
        let rights = planned.rights;
        let mut q = Query::new(id.clone(), text.to_string(), planned.input, sink, planned.plan, partitions);
        q.set_rights(rights);
        self.queries.insert(id.clone(), q);
        Ok(Outcome::QueryStarted { id, sink: target.to_string() })
    }

    fn insert_values(&mut self, target: &str, columns: Option<Vec<String>>, values: Vec<Expr>) -> Result<Outcome> {
        let Some(sink) = self.catalog.get(target).cloned() else {
            let mut msg = format!("Cannot insert values into an unknown stream/table: `{target}`");
            // A name that differs only in case: the quoting was probably wrong.
            if let Some(other) = self.catalog.sources.keys().find(|n| n.eq_ignore_ascii_case(target)) {
                if other.chars().any(|c| c.is_ascii_lowercase()) {
                    msg.push_str(&format!(
                        "\nDid you mean \"{other}\"? Hint: wrap the source name in double quotes to make it case-sensitive."
                    ));
                } else {
                    msg.push_str(&format!(
                        "\nDid you mean {other}? Hint: try removing double quotes from the source name."
                    ));
                }
            }
            return Err(SqlError::statement(msg));
        };
        if sink.read_only {
            return Err(SqlError::statement(format!(
                "Cannot insert values into read-only {}: {target}",
                sink.kind.name().to_ascii_lowercase()
            )));
        }
        let all: Vec<&Field> = sink.keys.iter().chain(&sink.values).collect();
        let columns: Vec<String> = match columns {
            Some(c) => c,
            None => {
                all.iter().map(|f| f.name.clone()).chain(sink.headers.iter().map(|h| h.field.name.clone())).collect()
            }
        };
        if columns.len() != values.len() {
            return Err(SqlError::statement(format!(
                "Expected number columns and values to match: {}, {}",
                columns.len(),
                values.len()
            ))
            .in_phase(crate::error::BUILDING));
        }
        // VALUES has no source whose columns a qualified name could read.
        for e in &values {
            let mut qualifier = None;
            e.walk(&mut |x| {
                if let Expr::Column { qualifier: Some(q), .. } = x {
                    qualifier.get_or_insert_with(|| q.clone());
                }
            });
            if let Some(q) = qualifier {
                return Err(SqlError::statement(format!("'{q}' is not a valid stream/table name or alias."))
                    .in_phase(crate::error::BUILDING));
            }
        }
        for h in &sink.headers {
            if columns.contains(&h.field.name) {
                return Err(SqlError::statement(format!("Cannot insert into HEADER columns: {}", h.field.name)));
            }
        }
        let scope = Scope::default();
        let mut env = Env::default();
        let mut row: BTreeMap<String, Value> = BTreeMap::new();
        for (name, e) in columns.iter().zip(&values) {
            let (c, _) = Compiler::new(&scope).compile(e)?;
            let v = c
                .eval(&[], &mut env)
                .map_err(|m| SqlError::statement(format!("Failed to insert values into '{target}'. {m}")))?;
            row.insert(name.clone(), v);
        }
        for name in row.keys() {
            if name == ROWPARTITION || name == ROWOFFSET {
                return Err(SqlError::statement(format!("Inserting into column `{name}` is not allowed.")));
            }
            if name != ROWTIME && !all.iter().any(|f| &f.name == name) {
                return Err(SqlError::statement(format!("Column name {name} does not exist.")));
            }
        }
        let get = |f: &Field| -> Result<Value> {
            let v = row.get(&f.name).cloned().unwrap_or(Value::Null);
            crate::expr::cast(v, &f.ty).map_err(|m| {
                SqlError::statement(format!(
                    "Failed to insert values into '{target}'. Expected type {} for field {}: {m}",
                    f.ty, f.name
                ))
            })
        };
        let keys: Vec<Value> = sink.keys.iter().map(get).collect::<Result<_>>()?;
        let vals: Vec<Value> = sink.values.iter().map(get).collect::<Result<_>>()?;
        let timestamp = match row.get(ROWTIME) {
            Some(v) => v.as_i64().unwrap_or(0),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        let key = sink
            .key_serde
            .serialize(&sink.keys, &keys)
            .map_err(|m| SqlError::statement(format!("Failed to insert values into '{target}'. {m}")))?;
        let value = sink
            .value_serde
            .serialize(&sink.values, &vals)
            .map_err(|m| SqlError::statement(format!("Failed to insert values into '{target}'. {m}")))?;
        let partitions = self.topics.partitions(&sink.topic).unwrap_or(1).max(1);
        let partition = match &key {
            Some(k) if partitions > 1 => freshet_common::partitioner::partition_for_key(k, partitions),
            _ => 0,
        };
        self.topics.append(
            &sink.topic,
            partition,
            vec![Record { key: key.map(Into::into), value: value.map(Into::into), timestamp, headers: vec![] }],
        )?;
        Ok(Outcome::Message(String::new()))
    }

    /// Runs every persistent query until none has new input. Returns records processed.
    pub fn run_until_idle(&mut self) -> Result<usize> {
        let mut total = 0;
        loop {
            let mut progressed = 0;
            let ids: Vec<String> = self.queries.keys().cloned().collect();
            for id in ids {
                let Some(q) = self.queries.get_mut(&id) else {
                    continue;
                };
                if let Some(dir) = &self.restore_every_step {
                    if !q.has_state_store() {
                        let changelog = crate::query::changelog_topic(&id);
                        if self.topics.partitions(&changelog).is_none() {
                            self.topics.create_topic(&changelog, 1)?;
                        }
                        q.open_state(dir, &*self.topics)?;
                        q.poll_batch = 1;
                    }
                }
                let n = q.step(&self.topics, &mut self.processing_log)?;
                progressed += n;
                if let (Some(dir), true) = (&self.restore_every_step, n > 0) {
                    // As the server commits a step, then as a restart restores the state.
                    let changes = q.take_changes()?;
                    let changelog = crate::query::changelog_topic(&id);
                    if !changes.is_empty() {
                        let records = crate::state::StateStore::changelog_records(&changes, 0);
                        self.topics.append(&changelog, 0, records)?;
                    }
                    q.state_committed(&changes, self.topics.end_offset(&changelog, 0)?)?;
                    q.open_state(dir, &*self.topics)?;
                }
            }
            total += progressed;
            if progressed == 0 {
                return Ok(total);
            }
        }
    }

    /// Plans a SELECT into a persistent query writing `sink_name`.
    /// Expands `s->*` items into one item per field of the struct, named after the field.
    pub(crate) fn expand_struct_all(&self, select: &Select) -> Result<Option<Select>> {
        if !select.items.iter().any(|i| matches!(i, SelectItem::StructAll(_))) {
            return Ok(None);
        }
        let mut scope = Scope::default();
        for r in std::iter::once(&select.from).chain(select.joins.iter().map(|j| &j.source)) {
            let s = self
                .catalog
                .get(&r.name)
                .ok_or_else(|| SqlError::statement(format!("{} does not exist.", r.name)).at(r.pos))?;
            scope.columns.extend(s.scope(r.alias()).columns);
        }
        let mut out = select.clone();
        out.items.clear();
        for item in &select.items {
            let SelectItem::StructAll(e) = item else {
                out.items.push(item.clone());
                continue;
            };
            let (_, ty) = Compiler::new(&scope).compile(e)?;
            let SqlType::Struct(fields) = ty else {
                bail!("Expected STRUCT type for {e}->*, got {ty}");
            };
            for f in fields {
                out.items.push(SelectItem::Expr {
                    expr: Expr::Field(Box::new(e.clone()), f.name.clone()),
                    alias: Some(f.name.clone()),
                });
            }
        }
        Ok(Some(out))
    }

    pub(crate) fn plan(
        &self,
        select: &Select,
        sink_name: &str,
        props: &BTreeMap<String, Value>,
        existing_sink: Option<&SourceDef>,
    ) -> Result<Planned> {
        if let Some(expanded) = self.expand_struct_all(select)? {
            return self.plan(&expanded, sink_name, props, existing_sink);
        }
        if !select.joins.is_empty() {
            return self.plan_join(select, sink_name, props, existing_sink);
        }
        let input =
            self.catalog.get(&select.from.name).cloned().ok_or_else(|| {
                SqlError::statement(format!("{} does not exist.", select.from.name)).at(select.from.pos)
            })?;
        let alias = select.from.alias().to_string();
        let mut scope = input.scope(&alias);

        // Expand wildcards into column references.
        let mut items: Vec<(Expr, Option<String>)> = vec![];
        // Items a wildcard added for the PARTITION BY key (may be a pseudo-column: ROWOFFSET).
        let mut wildcard_keys: Vec<usize> = vec![];
        for item in &select.items {
            match item {
                SelectItem::Wildcard(q) => {
                    if let Some(q) = q {
                        if q != &alias && q != &input.name {
                            return Err(SqlError::statement(format!(
                                "'{q}' is not a valid stream/table name or alias."
                            )));
                        }
                    }
                    let col =
                        |name: &str| Expr::Column { qualifier: None, name: name.to_string(), pos: Pos::default() };
                    let by_null =
                        select.partition_by.len() == 1 && matches!(select.partition_by[0], Expr::Literal(Value::Null));
                    if self.transient.get() {
                        items.extend(input.transient_columns().into_iter().map(|n| (col(n), None)));
                        continue;
                    }
                    if select.partition_by.is_empty() {
                        for f in input.keys.iter().chain(&input.values).chain(input.headers.iter().map(|h| &h.field)) {
                            items.push((col(&f.name), None));
                        }
                    } else {
                        // Repartitioned: the new key columns first, then the values, then the
                        // old key columns (now values), as ksqlDB lays out a PARTITION BY.
                        if !by_null {
                            for pe in &select.partition_by {
                                wildcard_keys.push(items.len());
                                items.push((pe.clone(), None));
                            }
                        }
                        let is_new_key = |name: &str| {
                            select.partition_by.iter().any(|pe| matches!(pe, Expr::Column { name: n, .. } if n == name))
                        };
                        for f in input.values.iter().chain(&input.keys) {
                            if !is_new_key(&f.name) {
                                items.push((col(&f.name), None));
                            }
                        }
                    }
                }
                SelectItem::StructAll(e) => bail_unexpanded(e)?,
                SelectItem::Expr { expr, alias } => {
                    if let Some(a) = alias {
                        if is_reserved_column(a) {
                            return Err(SqlError::statement(format!(
                                "`{a}` is a reserved column name. You cannot use it as an alias for a column."
                            )));
                        }
                    }
                    check_typed(expr)?;
                    items.push((expr.clone(), alias.clone()))
                }
            }
        }

        // Table functions become extra columns of the row.
        let mut table_functions = vec![];
        let is_tf = |x: &Expr| matches!(x, Expr::Function { name, .. } if functions::is_table_function(name));
        let any_tf = items.iter().any(|(e, _)| {
            let mut found = false;
            e.walk(&mut |x| found |= is_tf(x));
            found
        });
        if any_tf && (!select.group_by.is_empty() || items.iter().any(|(e, _)| contains_aggregate(e))) {
            bail!("Table functions cannot be used with aggregations.");
        }
        for (item, _) in items.iter_mut() {
            // The table function itself, or one under field accesses and subscripts (`EXPLODE(a)->F`).
            let mut e = &mut *item;
            while let Expr::Field(inner, _) | Expr::Subscript(inner, _) | Expr::Cast(inner, _) = e {
                e = &mut **inner;
            }
            if let Expr::Function { name, args, pos, .. } = e {
                if functions::is_table_function(name) {
                    if input.kind == SourceKind::Table {
                        return Err(SqlError::statement("Table source is not supported with table functions"));
                    }
                    let (c, ty) = if functions::conformance::is_test_table_function(name) {
                        // ksqlDB's test-only table functions: a scalar call returning the rows.
                        let call = Expr::Function {
                            name: name.clone(),
                            args: args.clone(),
                            star: false,
                            distinct: false,
                            pos: *pos,
                        };
                        Compiler::new(&scope).compile(&call)?
                    } else {
                        if args.len() != 1 {
                            return Err(SqlError::statement(format!("{name} takes one argument")).at(*pos));
                        }
                        Compiler::new(&scope).compile(&args[0])?
                    };
                    let SqlType::Array(elem) = ty else {
                        let lower = name.to_ascii_lowercase();
                        return Err(SqlError::statement(format!(
                            "Function '{lower}' does not accept parameters ({ty}).\nValid alternatives are:\n{lower}(ARRAY<DECIMAL> input)\n{lower}(ARRAY<T> list)"
                        ))
                        .at(*pos));
                    };
                    let col = format!("$tf{}", table_functions.len());
                    scope.push(None, &col, *elem);
                    table_functions.push((scope.columns.len() - 1, c));
                    *e = Expr::Column { qualifier: None, name: col, pos: *pos };
                }
            }
        }

        let filter = match &select.filter {
            Some(f) => {
                // A windowed aggregation's bounds exist only after it: its WHERE cannot see them.
                if select.window.is_some() && input.window.is_none() {
                    if let Some(n) = first_window_bound(f) {
                        return Err(SqlError::statement(format!("Error in WHERE expression: Unknown column {n}.")));
                    }
                }
                let (c, t) = Compiler::new(&scope).compile(f).map_err(|e| unresolved_in("WHERE", e))?;
                if t != SqlType::Boolean {
                    return Err(SqlError::statement(format!(
                        "Type error in WHERE expression: Should evaluate to boolean but is {f} ({t}) instead."
                    )));
                }
                Some(c)
            }
            None => None,
        };

        // Generated names for unnamed expressions: KSQL_COL_n, skipping names in use.
        let named = name_items(items, &scope);
        for (i, (e, n)) in named.iter().enumerate() {
            let pseudo_ok =
                (self.transient.get() || wildcard_keys.contains(&i)) && (n == ROWPARTITION || n == ROWOFFSET);
            if matches!(e, Expr::Column { .. }) && is_reserved_column(n) && n != ROWTIME && !pseudo_ok {
                if n == WINDOWSTART || n == WINDOWEND {
                    if input.window.is_none() && select.window.is_none() {
                        return Err(SqlError::statement(format!(
                            "Window bounds column {n} can only be used in the SELECT clause of windowed aggregations"
                        )));
                    }
                    continue;
                }
                return Err(SqlError::statement(format!(
                    "Reserved column name in select: `{n}`. Please remove or alias the column."
                )));
            }
        }

        let has_aggregates =
            named.iter().any(|(e, _)| contains_aggregate(e)) || select.having.as_ref().is_some_and(contains_aggregate);
        let (key_serde, value_serde) = serdes_from_props(props, Some(&input), &self.properties)?;
        let sink_topic = sink_topic(existing_sink, props, &self.sink_topic_default(sink_name));

        if !select.group_by.is_empty() || has_aggregates {
            let shown = named.clone();
            return self
                .plan_aggregate(
                    select,
                    &input,
                    &scope,
                    filter,
                    named,
                    key_serde,
                    value_serde,
                    sink_name,
                    sink_topic,
                    existing_sink,
                )
                .map_err(|e| {
                    // ksqlDB names the statement, as it rewrote it, after a key format it refuses.
                    if e.message.starts_with("Key format does not support schema.")
                        && existing_sink.is_none()
                        && !self.transient.get()
                    {
                        let text = ctas_text(sink_name, props, select, &shown);
                        SqlError { message: format!("{}\nStatement: {text}", e.message), ..e }
                    } else {
                        e
                    }
                });
        }
        if select.window.is_some() {
            return Err(SqlError::statement("WINDOW clause requires a GROUP BY clause."));
        }

        // Keys: PARTITION BY expressions, or the source's key columns.
        let mut compiler = Compiler::new(&scope);
        let mut key_exprs = vec![];
        let mut key_fields = vec![];
        let mut used_items = HashSet::new();
        let item_canon: Vec<Option<String>> = named.iter().map(|(e, _)| canonical(&scope, e)).collect();
        // ksqlDB resolves the projection's functions before it checks the key columns.
        for (e, _) in &named {
            if let Err(err) = compiler.compile(e) {
                if err.message.starts_with("Function '") {
                    return Err(err);
                }
            }
        }
        let partitioned = !select.partition_by.is_empty();
        let partition_by_null =
            select.partition_by.len() == 1 && matches!(select.partition_by[0], Expr::Literal(Value::Null));
        if select.partition_by.len() > 1 && select.partition_by.iter().any(|e| matches!(e, Expr::Literal(Value::Null)))
        {
            return Err(SqlError::statement("Cannot PARTITION BY multiple columns including NULL"));
        }
        if partition_by_null && prop_string(props, "KEY_FORMAT").is_some_and(|f| !f.eq_ignore_ascii_case("NONE")) {
            bail!("Key format specified for stream without key columns.");
        }
        if partitioned && !partition_by_null {
            let mut missing = vec![];
            for pe in &select.partition_by {
                let (c, t) = compiler.compile(pe).map_err(|e| {
                    let mut e = SqlError { pos: None, ..unresolved_in("PARTITION BY", e) };
                    if let (true, Expr::Column { name, .. }) = (e.message.starts_with("PARTITION BY column"), pe) {
                        e.message.push_str(&format!(
                            " '{name}' must be a column in the source schema since PARTITION BY is applied on the input."
                        ));
                    }
                    e
                })?;
                let canon = format!("{c:?}");
                match item_canon.iter().position(|ic| ic.as_deref() == Some(&canon)) {
                    Some(i) => {
                        duplicate_key_check(&named, &item_canon, i)?;
                        used_items.insert(i);
                        key_fields.push(Field { name: named[i].1.clone(), ty: t.clone() });
                        check_key_type(&named[i].1, &t)?;
                        key_exprs.push(c);
                    }
                    None => missing.push(qualified_display(pe, &input.name)),
                }
            }
            if !missing.is_empty() {
                // ksqlDB names every partitioning expression when one is missing.
                let missing: Vec<String> =
                    select.partition_by.iter().map(|pe| qualified_display(pe, &input.name)).collect();
                let (noun, list) = describe_missing("partitioning expression", &missing);
                return Err(SqlError::statement(format!(
                    "The query used to build `{sink_name}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                    missing.join(", ")
                )));
            }
        } else if self.transient.get() {
            // Transient: no key columns, every item is an output column.
        } else if !partitioned {
            let mut missing = vec![];
            for k in &input.keys {
                let idx = scope.resolve(Some(&alias), &k.name)?.expect("source keys are in its scope");
                let canon = format!("{:?}", CExpr::Column(idx));
                match item_canon.iter().position(|ic| ic.as_deref() == Some(&canon)) {
                    Some(i) => {
                        duplicate_key_check(&named, &item_canon, i)?;
                        used_items.insert(i);
                        key_fields.push(Field { name: named[i].1.clone(), ty: k.ty.clone() });
                        key_exprs.push(CExpr::Column(idx));
                    }
                    None => missing.push(k.name.clone()),
                }
            }
            // ksqlDB's new query planner lets a stream drop its key: the output has no key.
            let new_planner = self
                .properties
                .get("ksql.new.query.planner.enabled")
                .is_some_and(|v| v.trim_matches('\'').eq_ignore_ascii_case("true"));
            let drops_key = new_planner && input.kind == SourceKind::Stream && key_fields.is_empty();
            if !missing.is_empty() && !drops_key {
                // ksqlDB names every key column when one is missing.
                let missing: Vec<String> = input.keys.iter().map(|k| k.name.clone()).collect();
                let (noun, list) = describe_missing("key column", &missing);
                return Err(SqlError::statement(format!(
                    "The query used to build `{sink_name}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                    missing.join(", ")
                )));
            }
        }
        if partitioned && input.kind == SourceKind::Table {
            return Err(SqlError::statement(
                "Unsupported operation: PARTITION BY is not supported on tables: use GROUP BY instead.",
            ));
        }
        let (value_exprs, value_fields) = compile_values(&mut compiler, &named, |i| used_items.contains(&i))?;
        check_duplicates(&key_fields, &value_fields)?;
        if value_fields.is_empty() && value_serde.format != Format::None {
            return Err(SqlError::statement("The projection contains no value columns."));
        }
        let output = self.output_def(
            sink_name,
            input.kind,
            sink_topic,
            key_fields,
            value_fields,
            key_serde,
            value_serde,
            if partitioned { None } else { input.window },
            existing_sink,
        )?;
        Ok(Planned {
            rights: vec![],
            kind: input.kind,
            input,
            output,
            plan: Plan::Project {
                filter,
                table_functions,
                key: transient_key(self, key_exprs, &value_exprs),
                value: value_exprs,
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn output_def(
        &self,
        name: &str,
        kind: SourceKind,
        topic: String,
        keys: Vec<Field>,
        values: Vec<Field>,
        key_serde: Serde,
        value_serde: Serde,
        window: Option<WindowKind>,
        existing: Option<&SourceDef>,
    ) -> Result<SourceDef> {
        if let Some(e) = existing {
            // INSERT INTO: the result must have the sink's columns (key names aside).
            let same = keys.len() == e.keys.len()
                && values.len() == e.values.len()
                && keys.iter().zip(&e.keys).all(|(a, b)| a.ty == b.ty)
                && values.iter().zip(&e.values).all(|(a, b)| a.ty == b.ty && a.name == b.name);
            if !same {
                let result = SourceDef { kind, keys, values, headers: vec![], ..e.clone() };
                bail!(
                    "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                    result.schema_string(),
                    e.schema_string()
                );
            }
            return Ok(e.clone());
        }
        let (key_serde, mut value_serde) = if self.transient.get() {
            // A transient query's rows go to its client, not to a topic: any format will do.
            (Serde::new(Format::Json), Serde::new(Format::Json))
        } else {
            (key_serde, value_serde)
        };
        let mut key_serde = key_serde;
        if key_serde.format == Format::None && !keys.is_empty() && !key_serde.explicit {
            // A keyless source's new key takes the default key format, as ksqlDB's does.
            key_serde = Serde { format: default_key_format(&self.properties)?, ..key_serde };
        }
        key_serde.check(&keys, "key")?;
        value_serde.check(&values, "value")?;
        if value_serde.format == Format::Kafka {
            value_serde.unwrapped = true;
        }
        Ok(SourceDef {
            name: name.to_string(),
            kind,
            topic,
            keys,
            values,
            headers: vec![],
            key_serde,
            value_serde,
            timestamp: None,
            timestamp_format: None,
            window,
            writer: None,
            read_only: false,
            sql: String::new(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_aggregate(
        &self,
        select: &Select,
        input: &SourceDef,
        scope: &Scope,
        filter: Option<CExpr>,
        named: Vec<(Expr, String)>,
        key_serde: Serde,
        value_serde: Serde,
        sink_name: &str,
        sink_topic: String,
        existing_sink: Option<&SourceDef>,
    ) -> Result<Planned> {
        if !select.group_by.is_empty() && input.value_serde.format == Format::Kafka {
            return Err(SqlError::statement(format!(
                "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
                input.name
            )));
        }
        if select.emit == Some(Emit::Final) && select.window.is_none() && !self.transient.get() {
            return Err(SqlError::statement("EMIT FINAL is only supported for windowed aggregations."));
        }
        if select.group_by.is_empty() && !self.transient.get() {
            // (A push query may aggregate its whole input as one group.)
            let plain: Vec<String> =
                named.iter().filter(|(e, _)| !contains_aggregate(e)).map(|(e, _)| e.to_string()).collect();
            if !plain.is_empty() {
                return Err(SqlError::statement(format!(
                    "Non-aggregate SELECT expression(s) not part of GROUP BY: {}",
                    plain.join(", ")
                )));
            }
            let mut calls = vec![];
            for (e, _) in &named {
                collect_aggregates(e, &mut calls);
            }
            let shown: Vec<String> = calls
                .iter()
                .map(|c| match c {
                    Expr::Function { name, star: true, .. } => format!("{}(ROWTIME)", name.to_ascii_uppercase()),
                    Expr::Function { name, args, .. } if args.is_empty() => {
                        format!("{}(ROWTIME)", name.to_ascii_uppercase())
                    }
                    other => other.to_string(),
                })
                .collect();
            return Err(SqlError::statement(format!(
                "CREATE TABLE AS SELECT statement does not support aggregate function [{}] without a GROUP BY clause.",
                shown.join(", ")
            )));
        }
        if input.kind == SourceKind::Table {
            // Aggregates that cannot take a row back (no undo) need a stream.
            let mut calls = vec![];
            for (e, _) in &named {
                collect_aggregates(e, &mut calls);
            }
            let mut stream_only: Vec<String> = vec![];
            for c in &calls {
                if let Expr::Function { name, .. } = c {
                    let n = name.to_ascii_uppercase();
                    let no_undo = matches!(n.as_str(), "MIN" | "MAX" | "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET");
                    if no_undo && !stream_only.contains(&n) {
                        stream_only.push(n);
                    }
                }
            }
            if !stream_only.is_empty() {
                let list = match stream_only.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("s {} and {last}", rest.join(", ")),
                    _ => format!(" {}", stream_only[0]),
                };
                return Err(SqlError::statement(format!(
                    "The aggregation function{list} cannot be applied to a table source, only to a stream source."
                )));
            }
        }
        let mut compiler = Compiler::new(scope);
        // Group-by expressions on the input row.
        let mut group_by = vec![];
        let mut group_canon = vec![];
        let mut group_types = vec![];
        for g in &select.group_by {
            if contains_aggregate(g) {
                let name = aggregate_name(g).unwrap_or_default();
                return Err(SqlError::statement(format!(
                    "GROUP BY does not support aggregate functions: {name} is an aggregate function."
                )));
            }
            let (c, t) = compiler.compile(g).map_err(window_bounds_error)?;
            let canon = format!("{c:?}");
            if group_canon.contains(&canon) {
                return Err(SqlError::statement(format!(
                    "Duplicate GROUP BY expression: {}",
                    qualified_display(g, &input.name)
                )));
            }
            group_canon.push(canon);
            group_by.push(c);
            group_types.push(t);
        }
        // Aggregate calls in the projection and HAVING, deduplicated.
        let mut calls: Vec<Expr> = vec![];
        for (e, _) in &named {
            collect_aggregates(e, &mut calls);
        }
        if let Some(h) = &select.having {
            collect_aggregates(h, &mut calls);
        }
        if calls.is_empty() {
            // Unknown functions and columns are reported before the missing aggregate.
            for (e, _) in &named {
                compiler.compile(e)?;
            }
            return Err(SqlError::statement(
                "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.",
            ));
        }
        // Window bounds in HAVING (even inside an aggregate) are refused first.
        if let Some(n) = select.having.as_ref().and_then(first_window_bound) {
            return Err(SqlError::statement(format!(
                "Window bounds column {n} can only be used in the SELECT clause of windowed aggregations"
            )));
        }
        let mut specs = vec![];
        let mut args = vec![];
        let mut call_canon = vec![];
        for call in &calls {
            let Expr::Function { name, args: a, star, pos, .. } = call else {
                unreachable!("collect_aggregates returns calls")
            };
            let upper = name.to_ascii_uppercase();
            if functions::conformance::is_test_aggregate(&upper) {
                // The function decides which leading arguments are columns and which trailing
                // ones are literal initialisation arguments.
                let mut compiled = vec![];
                let mut types = vec![];
                let mut literals = vec![];
                for arg in a {
                    if contains_aggregate(arg) {
                        return Err(SqlError::statement(format!("Aggregate functions can not be nested: {call}")));
                    }
                    let (c, t) = compiler.compile(arg).map_err(|e| window_bounds_error(e.at(*pos)))?;
                    compiled.push(c);
                    types.push(t);
                    literals.push(match arg {
                        Expr::Literal(v) => Some(v.clone()),
                        _ => None,
                    });
                }
                let (spec, columns) =
                    functions::conformance::resolve_aggregate(&upper, &types, &literals).map_err(|e| e.at(*pos))?;
                compiled.truncate(columns);
                call_canon.push(format!("{upper}({compiled:?})"));
                specs.push(spec);
                args.push(compiled);
                continue;
            }
            // Trailing literal arguments are parameters (TOPK's k); the rest are evaluated.
            let mut exprs = vec![];
            let mut types = vec![];
            let mut consts = vec![];
            for (i, arg) in a.iter().enumerate() {
                match arg {
                    Expr::Literal(v) if i > 0 => consts.push(v.clone()),
                    _ => {
                        if contains_aggregate(arg) {
                            return Err(SqlError::statement(format!("Aggregate functions can not be nested: {call}")));
                        }
                        let (c, t) = compiler.compile(arg).map_err(|e| window_bounds_error(e.at(*pos)))?;
                        exprs.push(c);
                        types.push(t);
                    }
                }
            }
            // COUNT(1) counts rows.
            let star = *star
                || (name.eq_ignore_ascii_case("COUNT") && matches!(a.as_slice(), [Expr::Literal(v)] if !v.is_null()));
            let mut spec =
                aggregate::resolve(&name.to_ascii_uppercase(), &types, &consts, star).map_err(|e| e.at(*pos))?;
            // ksql.functions.collect_list.limit / collect_set.limit: how many values are kept.
            let limit_property = match spec.kind {
                aggregate::AggKind::CollectList => Some("ksql.functions.collect_list.limit"),
                aggregate::AggKind::CollectSet => Some("ksql.functions.collect_set.limit"),
                _ => None,
            };
            if let Some(p) = limit_property {
                if let Some(text) = self.properties.get(p) {
                    let limit: i64 = text.trim().parse().map_err(|_| {
                        SqlError::statement(format!("Invalid value {text} for configuration {p}: expected a number"))
                    })?;
                    spec.params = vec![Value::BigInt(limit)];
                }
            }
            call_canon.push(format!("{}({:?})", name.to_ascii_uppercase(), exprs));
            specs.push(spec);
            args.push(exprs);
        }

        // The aggregation's state goes through internal topics in the source's value format.
        if matches!(input.value_serde.format, Format::Delimited | Format::Kafka)
            && specs.iter().any(|s| s.structured_state())
            && !self.transient.get()
        {
            return Err(SqlError::statement(
                "One of the functions used in the statement has an intermediate type that the value format can not handle. Please remove the function or change the format.",
            ));
        }
        // The aggregated row: group keys, aggregate results, ROWTIME, WINDOWSTART, WINDOWEND.
        let mut agg_scope = Scope::default();
        for (i, t) in group_types.iter().enumerate() {
            agg_scope.push(None, &format!("$gk{i}"), t.clone());
        }
        for (i, s) in specs.iter().enumerate() {
            agg_scope.push(None, &format!("$agg{i}"), s.result.clone());
        }
        let alias = select.from.alias();
        agg_scope.push(Some(alias), ROWTIME, SqlType::BigInt);
        agg_scope.push(Some(alias), WINDOWSTART, SqlType::BigInt);
        agg_scope.push(Some(alias), WINDOWEND, SqlType::BigInt);
        let n_groups = group_by.len();
        let lookup = |e: &Expr| -> Option<usize> {
            if let Expr::Function { name, .. } = e {
                if functions::is_aggregate(&name.to_ascii_uppercase()) {
                    let i = calls.iter().position(|c| c.to_string() == e.to_string())?;
                    return Some(n_groups + i);
                }
            }
            let (c, _) = Compiler::new(scope).compile(e).ok()?;
            let canon = format!("{c:?}");
            group_canon.iter().position(|g| *g == canon)
        };
        let _ = &call_canon;
        let windowed = select.window.is_some();
        let mut post = Compiler::new(&agg_scope);
        post.aggregate_columns = Some(&lookup);
        // Which projection items are the group keys.
        let mut key_exprs = vec![None; n_groups];
        let mut key_fields: Vec<Option<Field>> = vec![None; n_groups];
        let mut value_exprs = vec![];
        let mut value_fields = vec![];
        let mut non_aggregate = vec![];
        let transient = self.transient.get();
        for (e, n) in &named {
            if let Some(i) = lookup(e).filter(|i| *i < n_groups && !transient) {
                if let Some(first) = &key_fields[i] {
                    return Err(SqlError::statement(format!(
                        "The projection contains a key column more than once: `{}` and `{n}`.",
                        first.name
                    )));
                }
                key_exprs[i] = Some(CExpr::Column(i));
                key_fields[i] = Some(Field { name: n.clone(), ty: group_types[i].clone() });
                continue;
            }
            if !windowed {
                if let Expr::Column { name, .. } = e {
                    if name == WINDOWSTART || name == WINDOWEND {
                        return Err(SqlError::statement(format!(
                            "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
                        )));
                    }
                }
            }
            if windowed {
                if let Expr::Column { name, .. } = e {
                    if name == WINDOWSTART || name == WINDOWEND {
                        // Window bounds are part of the windowed key, not value columns.
                        let (c, t) = post.compile(e)?;
                        value_exprs.push(c);
                        value_fields.push(Field { name: n.clone(), ty: t });
                        continue;
                    }
                }
            }
            match post.compile(e) {
                Ok((c, t)) => {
                    value_exprs.push(c);
                    value_fields.push(Field { name: n.clone(), ty: t });
                }
                Err(err) if err.message.contains("cannot be resolved") => non_aggregate.push(e.to_string()),
                Err(err) => return Err(err),
            }
        }
        if !non_aggregate.is_empty() {
            return Err(SqlError::statement(format!(
                "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
                non_aggregate.join(", ")
            )));
        }
        let missing: Vec<String> = select
            .group_by
            .iter()
            .zip(&key_exprs)
            .filter(|(_, k)| k.is_none() && !transient)
            .map(|(g, _)| g.to_string())
            .collect();
        if !missing.is_empty() {
            let (noun, list) = describe_missing("grouping expression", &missing);
            return Err(SqlError::statement(format!(
                "The query used to build `{sink_name}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                missing.join(", ")
            )));
        }
        let having = match &select.having {
            Some(h) => {
                let (c, t) = post.compile(h).map_err(|err| {
                    if err.message.contains("cannot be resolved") {
                        let mut cols = vec![];
                        h.walk(&mut |x| {
                            if let Expr::Column { name, .. } = x {
                                if !cols.contains(name) {
                                    cols.push(name.clone())
                                }
                            }
                        });
                        SqlError::statement(format!(
                            "Non-aggregate HAVING expression not part of GROUP BY: {}",
                            cols.join(", ")
                        ))
                    } else {
                        err
                    }
                })?;
                if t != SqlType::Boolean {
                    return Err(SqlError::statement("HAVING expression must be BOOLEAN"));
                }
                Some(c)
            }
            None => None,
        };
        let key_fields: Vec<Field> = key_fields.into_iter().flatten().collect();
        for f in &key_fields {
            check_key_type(&f.name, &f.ty)?;
        }
        check_duplicates(&key_fields, &value_fields)?;
        if value_fields.is_empty() {
            return Err(SqlError::statement("The projection contains no value columns."));
        }
        // Multiple group-by keys: KAFKA cannot carry them; use JSON... as ksqlDB does, refuse.
        let output = self.output_def(
            sink_name,
            SourceKind::Table,
            sink_topic,
            key_fields,
            value_fields,
            key_serde,
            value_serde,
            select.window.map(|w| w.kind),
            existing_sink,
        )?;
        Ok(Planned {
            rights: vec![],
            kind: SourceKind::Table,
            input: input.clone(),
            output,
            plan: Plan::Aggregate(AggregatePlan {
                filter,
                group_by,
                specs,
                args,
                window: select.window,
                emit_final: select.emit == Some(Emit::Final),
                having,
                key: transient_key(self, key_exprs.into_iter().flatten().collect(), &value_exprs),
                value: value_exprs,
            }),
        })
    }

    /// Plans `FROM a JOIN b ON a.x = b.y [JOIN c ON ...]`: each join is a stage whose left input is
    /// the previous stage's result. Stages are stream-stream (WITHIN), stream-table, table-table
    /// by primary key, or table-table by foreign key.
    fn plan_join(
        &self,
        select: &Select,
        sink_name: &str,
        props: &BTreeMap<String, Value>,
        existing_sink: Option<&SourceDef>,
    ) -> Result<Planned> {
        use crate::join::{JoinPlan, JoinShape};
        use SourceKind::{Stream, Table};
        let lookup = |r: &SourceRef| {
            self.catalog
                .get(&r.name)
                .cloned()
                .ok_or_else(|| SqlError::statement(format!("{} does not exist.", r.name)).at(r.pos))
        };
        if select.joins.len() > freshet_common::limits::SQL_MAX_JOINS {
            return Err(SqlError::statement(format!(
                "A query may join at most {} sources to its FROM source; this one joins {}.",
                freshet_common::limits::SQL_MAX_JOINS,
                select.joins.len()
            )));
        }
        let first = lookup(&select.from)?;
        if select.joins.len() == 1 && select.joins[0].source.name == first.name {
            return Err(SqlError::statement(format!(
                "Can not join '{0}' to '{0}': self joins are not yet supported.",
                first.name
            )));
        }
        let mut sources: Vec<(SourceDef, String)> = vec![(first, select.from.alias().to_string())];
        for j in &select.joins {
            let s = lookup(&j.source)?;
            if select.joins.len() > 1 && sources.iter().any(|(x, _)| x.name == s.name) {
                return Err(SqlError::statement(format!(
                    "N-way joins do not support multiple occurrences of the same source. Source: '{}'",
                    s.name
                )));
            }
            sources.push((s, j.source.alias().to_string()));
        }
        let kafka: Vec<&str> = sources
            .iter()
            .filter(|(s, _)| s.value_serde.format == Format::Kafka)
            .map(|(s, _)| s.name.as_str())
            .collect();
        if !kafka.is_empty() {
            return Err(SqlError::statement(format!(
                "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
                kafka.join(", ")
            )));
        }
        let scopes: Vec<Scope> = sources.iter().map(|(s, a)| s.scope(a)).collect();
        // Which source (index) an unqualified or qualified column belongs to.
        let source_of = |qualifier: &Option<String>, name: &str, upto: usize| -> Result<usize> {
            match qualifier {
                Some(q) => sources[..=upto]
                    .iter()
                    .position(|(s, a)| a == q || (s.name == *q && *a == s.name))
                    .ok_or_else(|| SqlError::statement(format!("'{q}' is not a valid stream/table name or alias."))),
                None => {
                    let found: Vec<usize> =
                        (0..=upto).filter(|&i| scopes[i].resolve(None, name).ok().flatten().is_some()).collect();
                    match found.as_slice() {
                        [one] => Ok(*one),
                        [] => Err(SqlError::statement(format!("JOIN ON column '{name}' cannot be resolved."))),
                        many => {
                            let names: Vec<String> = many.iter().map(|&i| format!("{}.{name}", sources[i].1)).collect();
                            Err(SqlError::statement(format!(
                                "Column '{name}' is ambiguous. Could be {}.",
                                names.join(" or ")
                            ))
                            .in_phase(crate::error::PREPARING))
                        }
                    }
                }
            }
        };
        // Every qualifier must name a source of the FROM clause (checked before any column resolves).
        let mut unknown_qualifier = None;
        for e in select.joins.iter().map(|j| &j.on).chain(select.filter.iter()) {
            e.walk(&mut |x| {
                if let Expr::Column { qualifier: Some(q), .. } = x {
                    if unknown_qualifier.is_none() && !sources.iter().any(|(s, a)| a == q || s.name == *q) {
                        unknown_qualifier = Some(q.clone());
                    }
                }
            });
        }
        if let Some(q) = unknown_qualifier {
            return Err(SqlError::statement(format!("'{q}' is not a valid stream/table name or alias."))
                .in_phase(crate::error::BUILDING));
        }
        // The sources each side of each join criterion references (names that do not resolve are
        // reported later, with their position).
        let sides_of = |k: usize, e: &Expr| -> Vec<usize> {
            let mut found = vec![];
            e.walk(&mut |x| {
                if let Expr::Column { qualifier, name, .. } = x {
                    if let Ok(i) = source_of(qualifier, name, k + 1) {
                        if !found.contains(&i) {
                            found.push(i);
                        }
                    }
                }
            });
            found
        };
        let mut criteria_sources: Vec<Option<usize>> = vec![]; // per join: the source its left side references
        for (k, join) in select.joins.iter().enumerate() {
            let Expr::Binary(BinaryOp::Eq, a, b) = &join.on else {
                criteria_sources.push(None);
                continue;
            };
            let (sa, sb) = (sides_of(k, a), sides_of(k, b));
            if let ([x], [y]) = (sa.as_slice(), sb.as_slice()) {
                let name = |i: usize| &sources[i].0.name;
                if x == y {
                    bail!(
                        "Each side of the join must reference exactly one source and not the same source. Left side references `{}` and right references `{}`",
                        name(*x),
                        name(*y)
                    );
                }
                if *x != k + 1 && *y != k + 1 {
                    bail!(
                        "A join criteria is expected to reference the source (`{}`) in the FROM clause, instead the right source references `{}` and the left source references `{}`",
                        name(k + 1),
                        name(*y),
                        name(*x)
                    );
                }
                criteria_sources.push(Some(if *x == k + 1 { *y } else { *x }));
            } else {
                criteria_sources.push(None);
            }
        }
        let in_many = |n: &str| scopes.iter().filter(|s| s.resolve(None, n).ok().flatten().is_some()).count() > 1;

        // The synthetic key column's name: ROWKEY, or the first ROWKEY_<n> no source column has.
        let taken: HashSet<&str> = sources
            .iter()
            .flat_map(|(s, _)| s.keys.iter().chain(&s.values).chain(s.headers.iter().map(|h| &h.field)))
            .map(|f| f.name.as_str())
            .collect();
        let rowkey_name = std::iter::once("ROWKEY".to_string())
            .chain((1..).map(|n| format!("ROWKEY_{n}")))
            .find(|n| !taken.contains(n.as_str()))
            .expect("a free name");
        // The accumulated row layout: source 0, then per stage the right source and a ROWKEY.
        let mut scope = scopes[0].clone();
        let mut offsets = vec![0usize]; // start of each source in the joined row
        let mut left_kind = sources[0].0.kind;
        let mut stages: Vec<JoinPlan> = vec![];
        let mut synthetic = false;
        let mut rowkey_idx = 0;
        // Per stage, its join expressions (canonical, on the joined row).
        let mut stage_keys: Vec<Vec<String>> = vec![];
        let mut key_type = SqlType::String;
        let mut on_columns: Vec<Vec<(usize, String)>> = vec![]; // per stage: (column index, display)
        for (k, join) in select.joins.iter().enumerate() {
            let (right, ra) = (&sources[k + 1].0, sources[k + 1].1.clone());
            let rscope = &scopes[k + 1];
            let left_name = if k == 0 { sources[0].0.name.clone() } else { "the joined sources".into() };
            let kind_text = match join.kind {
                JoinKind::Inner => "[INNER] JOIN",
                JoinKind::Left => "LEFT [OUTER] JOIN",
                JoinKind::Right => "RIGHT [OUTER] JOIN",
                JoinKind::Full => "[FULL] OUTER JOIN",
            };
            if left_kind == Table && right.kind == Stream {
                return Err(SqlError::statement(format!(
                    "Invalid join order: table-stream joins are not supported; only stream-table joins. Got {} {kind_text} {}.",
                    match criteria_sources[k] {
                        Some(i) => sources[i].0.name.clone(),
                        None if k == 0 => left_name.clone(),
                        None => sources[k].0.name.clone(),
                    },
                    right.name
                )));
            }
            if left_kind == Stream && right.kind == Table && join.kind == JoinKind::Full {
                return Err(SqlError::statement(format!(
                    "Invalid join type: full-outer join not supported for stream-table join. Got {left_name} {kind_text} {}.",
                    right.name
                )));
            }
            if k == 0 && sources[0].0.window.is_some() != right.window.is_some() {
                let (w, nw) = if right.window.is_some() { (right, &sources[0].0) } else { (&sources[0].0, right) };
                let wt = match w.window {
                    Some(WindowKind::Session { .. }) => "SESSION",
                    Some(WindowKind::Hopping { .. }) => "HOPPING",
                    _ => "TUMBLING",
                };
                return Err(SqlError::statement(format!(
                    "Can not join windowed source to non-windowed source.\n`{}` is {wt} windowed\n`{}` is not windowed",
                    w.name, nw.name
                )));
            }
            if let (0, Some(a), Some(b)) = (k, sources[0].0.window, right.window) {
                let name = |w: WindowKind| match w {
                    WindowKind::Session { .. } => "SESSION",
                    WindowKind::Hopping { .. } => "HOPPING",
                    WindowKind::Tumbling { .. } => "TUMBLING",
                };
                let session = |w: WindowKind| matches!(w, WindowKind::Session { .. });
                if session(a) != session(b) {
                    return Err(SqlError::statement(format!(
                        "Incompatible windowed sources.\nLeft source: {}\nRight source: {}\nSession windowed sources can only be joined to other session windowed sources, and may still not result in expected behaviour as session bounds must be an exact match for the join to work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling windowed sources",
                        name(a),
                        name(b)
                    )));
                }
                // Keys of different window types or sizes are different windowed key formats:
                // one side would have to be repartitioned into the other's.
                if a != b {
                    return Err(SqlError::statement(
                        "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
                    ));
                }
            }
            let Expr::Binary(BinaryOp::Eq, a, b) = &join.on else {
                return Err(SqlError::statement(format!(
                    "Invalid join condition: joins on multiple conditions are not yet supported. Got {}.",
                    join.on
                )));
            };
            // Each side must reference exactly one source: the new one, or one already joined.
            let side_of = |e: &Expr| -> Result<Option<bool>> {
                let mut found: Vec<usize> = vec![];
                let mut err = None;
                e.walk(&mut |x| {
                    if let Expr::Column { qualifier, name, pos } = x {
                        match source_of(qualifier, name, k + 1) {
                            Ok(i) => {
                                if !found.contains(&i) {
                                    found.push(i)
                                }
                            }
                            Err(e) => err = Some(e.at(*pos)),
                        }
                    }
                });
                if let Some(e) = err {
                    return Err(e);
                }
                Ok(match found.as_slice() {
                    [i] => Some(*i == k + 1),
                    _ => None,
                })
            };
            let (sa, sb) = (side_of(a)?, side_of(b)?);
            let (lexpr, rexpr) = match (sa, sb) {
                (Some(false), Some(true)) => (a.as_ref(), b.as_ref()),
                (Some(true), Some(false)) => (b.as_ref(), a.as_ref()),
                _ => {
                    let bad = if sa.is_none() { a } else { b };
                    return Err(SqlError::statement(format!(
                        "Invalid comparison expression '{bad}' in join '{}'. Each side of the join comparision must contain references from exactly one source.",
                        join.on
                    )));
                }
            };
            let on_err = |e| unresolved_in("JOIN ON", e);
            let (lkey, lt) = Compiler::new(&scope).compile(lexpr).map_err(on_err)?;
            let (rkey, rt) = Compiler::new(rscope).compile(rexpr).map_err(on_err)?;
            let lsrc = match lexpr {
                Expr::Column { qualifier, name, .. } => source_of(qualifier, name, k).ok(),
                _ => None,
            };
            let lsrc_name = lsrc.map(|i| sources[i].0.name.clone()).unwrap_or_else(|| sources[0].0.name.clone());
            if lt != rt {
                return Err(SqlError::statement(format!(
                    "Invalid join condition: types don't match. Got {}{{{lt}}} = {}{{{rt}}}.",
                    qualified_display(lexpr, &lsrc_name),
                    qualified_display(rexpr, &right.name)
                )));
            }
            // Whether an expression is a source's (single) primary key column.
            let left_is_pk = match (&lkey, lsrc) {
                (CExpr::Column(i), Some(s)) => {
                    let local = i - offsets[s];
                    sources[s].0.keys.len() == 1 && local == 0
                }
                _ => false,
            };
            let right_is_pk = matches!(rkey, CExpr::Column(0)) && right.keys.len() == 1;
            // Joined on both keys, nothing is repartitioned: the partitions must line up.
            if let (true, true, Some(l)) = (left_is_pk, right_is_pk, lsrc) {
                let count = |s: &SourceDef| self.topics.partitions(&s.topic).unwrap_or(1);
                let (lp, rp) = (count(&sources[l].0), count(right));
                if lp != rp {
                    bail!(
                        "Can't join `{0}` with `{1}` since the number of partitions don't match. `{0}` partitions = {lp}; `{1}` partitions = {rp}. Please repartition either one so that the number of partitions match.",
                        sources[l].0.name,
                        right.name
                    );
                }
            }
            let shape = match (left_kind, right.kind) {
                (Stream, Stream) => {
                    let Some((before, after)) = join.within else {
                        return Err(SqlError::statement(
                            "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn about how to specify a WITHIN clause with a stream-stream join, please visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select",
                        ));
                    };
                    if (sources[0].0.window.is_some() && !left_is_pk) || (right.window.is_some() && !right_is_pk) {
                        return Err(SqlError::statement(
                            "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
                        ));
                    }
                    JoinShape::StreamStream { before, after, grace: join.grace }
                }
                (Stream, Table) => {
                    if join.within.is_some() {
                        return Err(SqlError::statement(
                            "A window definition was provided for a Stream-Table join. These joins are not windowed. Please drop the window definition (ie. the WITHIN clause) and try to execute your join again.",
                        ));
                    }
                    if !right_is_pk {
                        return Err(SqlError::statement(format!(
                            "Invalid join condition: stream-table joins require to join on the table's primary key. Got {} = {}.",
                            qualified_display(lexpr, &lsrc_name),
                            qualified_display(rexpr, &right.name)
                        )));
                    }
                    JoinShape::StreamTable
                }
                _ => {
                    if join.within.is_some() {
                        return Err(SqlError::statement(
                            "A window definition was provided for a Table-Table join. These joins are not windowed. Please drop the window definition (i.e. the WITHIN clause) and try to execute your Table-Table join again.",
                        ));
                    }
                    if !right_is_pk {
                        return Err(SqlError::statement(format!(
                            "Invalid join condition: table-table joins require to join on the primary key of the right input table. Got {} = {}.",
                            qualified_display(lexpr, &lsrc_name),
                            qualified_display(rexpr, &right.name)
                        )));
                    }
                    if left_is_pk || k > 0 && matches!(lkey, CExpr::Column(i) if i == rowkey_idx) {
                        JoinShape::TableTable
                    } else {
                        if matches!(join.kind, JoinKind::Right | JoinKind::Full) {
                            return Err(SqlError::statement(format!(
                                "{} OUTER JOIN on a foreign key is not supported",
                                if join.kind == JoinKind::Right { "RIGHT" } else { "FULL" }
                            )));
                        }
                        if right.window.is_some() || sources[0].0.window.is_some() {
                            return Err(SqlError::statement(
                                "Foreign-key table-table joins are not supported on windowed tables.",
                            ));
                        }
                        JoinShape::ForeignKey
                    }
                }
            };
            // Joined on the previous stage's synthetic key: the result keeps a synthetic key.
            let on_synthetic = synthetic && k > 0 && matches!(lkey, CExpr::Column(i) if i == rowkey_idx);
            // Joined on an expression the previous stage joined on (its result's key already):
            // the key stays the previous stage's.
            let lcanon = format!("{lkey:?}");
            let on_previous_key = !synthetic && stage_keys.last().is_some_and(|ks: &Vec<String>| ks.contains(&lcanon));
            let lw = scope.columns.len();
            let rw = rscope.columns.len();
            offsets.push(lw);
            scope.columns.extend(rscope.columns.iter().cloned());
            rowkey_idx = scope.columns.len();
            scope.push(None, &rowkey_name, lt.clone());
            // Earlier stages' ROWKEYs are renamed so the last one is the one `ROWKEY` names.
            for c in scope.columns[..rowkey_idx].iter_mut() {
                if c.name == rowkey_name && c.qualifier.is_none() {
                    c.name = format!("$ROWKEY{k}");
                }
            }
            key_type = lt;
            // The last join decides the result's key: a synthetic ROWKEY after a full outer
            // join or a join on expressions only; else the join's columns.
            synthetic = on_synthetic
                || join.kind == JoinKind::Full
                || (!matches!(lkey, CExpr::Column(_)) && !matches!(rkey, CExpr::Column(_)) && !on_previous_key);
            let mut cols = vec![];
            if let CExpr::Column(i) = lkey {
                cols.push((i, qualified_display(lexpr, &sources[lsrc.unwrap_or(0)].1)));
            }
            if let CExpr::Column(j) = rkey {
                cols.push((lw + j, qualified_display(rexpr, &ra)));
            }
            if on_previous_key && cols.is_empty() {
                cols.extend(on_columns.last().cloned().unwrap_or_default());
            }
            let rcanon = Compiler::new(&scope).compile(rexpr).ok().map(|(c, _)| format!("{c:?}"));
            stage_keys.push(std::iter::once(lcanon).chain(rcanon).collect());
            on_columns.push(cols);
            stages.push(JoinPlan {
                kind: join.kind,
                shape,
                left_key: lkey,
                right_key: rkey,
                left_width: lw,
                right_width: rw,
                filter: None,
                pushed: [None, None],
                key: vec![],
                value: vec![],
                window_key: match (k, sources[0].0.window, right.window) {
                    (0, Some(w), Some(_)) => {
                        let both = matches!(w, WindowKind::Session { .. });
                        let (lc, rc) = (sources[0].0.column_count(), right.column_count());
                        [Some((lc + 3, lc + 4, both)), Some((rc + 3, rc + 4, both))]
                    }
                    _ => [None, None],
                },
            });
            if right.kind == Stream {
                left_kind = Stream;
            }
        }
        let fk = stages.iter().any(|s| s.shape == JoinShape::ForeignKey);

        // Projection items with their names.
        let qualified = |q: &str, name: &str| Expr::Column {
            qualifier: Some(q.to_string()),
            name: name.to_string(),
            pos: Pos::default(),
        };
        let source_columns = |src: &SourceDef, alias: &str, out: &mut Vec<(Expr, Option<String>)>| {
            // Keys, a windowed source's window bounds, then values (ksqlDB's order).
            for f in &src.keys {
                out.push((qualified(alias, &f.name), Some(format!("{alias}_{}", f.name))));
            }
            if src.window.is_some() {
                for n in [WINDOWSTART, WINDOWEND] {
                    out.push((qualified(alias, n), Some(format!("{alias}_{n}"))));
                }
            }
            for f in src.values.iter().chain(src.headers.iter().map(|h| &h.field)) {
                out.push((qualified(alias, &f.name), Some(format!("{alias}_{}", f.name))));
            }
            // As ksqlDB: a repartitioned join's `*` carries each side's pseudo-columns too.
            if !select.partition_by.is_empty() {
                for n in [ROWTIME, ROWPARTITION, ROWOFFSET] {
                    out.push((qualified(alias, n), Some(format!("{alias}_{n}"))));
                }
            }
        };
        let mut items: Vec<(Expr, Option<String>)> = vec![];
        for item in &select.items {
            match item {
                SelectItem::Wildcard(None) => {
                    if synthetic && !fk && !self.transient.get() {
                        items.push((
                            Expr::Column { qualifier: None, name: rowkey_name.clone(), pos: Pos::default() },
                            None,
                        ));
                    }
                    for (s, a) in &sources {
                        source_columns(s, a, &mut items);
                    }
                }
                SelectItem::StructAll(e) => bail_unexpanded(e)?,
                SelectItem::Wildcard(Some(q)) => match sources.iter().find(|(s, a)| a == q || s.name == *q) {
                    Some((s, a)) => source_columns(s, a, &mut items),
                    None => {
                        return Err(SqlError::statement(format!("'{q}' is not a valid stream/table name or alias.")))
                    }
                },
                SelectItem::Expr { expr, alias } => {
                    check_typed(expr)?;
                    // A qualified column keeps its name unless several sources have it.
                    let name = alias.clone().or_else(|| match expr {
                        Expr::Column { qualifier: Some(q), name, .. } if in_many(name) => Some(format!("{q}_{name}")),
                        _ => None,
                    });
                    items.push((expr.clone(), name));
                }
            }
        }
        let explicit_alias: Vec<bool> = select_aliases(&select.items, &items);
        let mut named = name_items(items, &scope);

        let mut compiler = Compiler::new(&scope);
        let filter = match &select.filter {
            Some(f) => Some(compiler.compile(f)?.0),
            None => None,
        };
        if !select.group_by.is_empty() || named.iter().any(|(e, _)| contains_aggregate(e)) {
            return self.plan_join_aggregate(
                select,
                sources,
                stages,
                &scope,
                filter,
                named,
                props,
                existing_sink,
                sink_name,
            );
        }
        // Which items are the key.
        let canon: Vec<Option<String>> = named.iter().map(|(e, _)| canonical(&scope, e)).collect();
        let mut key_items: Vec<usize> = vec![];
        // PARTITION BY: the result is keyed by those expressions (each one a projection item),
        // not by the join expression.
        let partitioned = !select.partition_by.is_empty() && !self.transient.get();
        let mut partition_keys: Vec<(CExpr, SqlType)> = vec![];
        if partitioned && sources.iter().all(|(s, _)| s.kind == Table) {
            return Err(SqlError::statement(
                "Unsupported operation: PARTITION BY is not supported on tables: use GROUP BY instead.",
            ));
        }
        if self.transient.get() {
            // Transient: no key columns, every item is an output column.
        } else if partitioned {
            let mut all_projected = true;
            for pe in &select.partition_by {
                let (c, t) = compiler.compile(pe).map_err(|e| unresolved_in("PARTITION BY", e))?;
                let item = format!("{c:?}");
                match canon.iter().position(|x| x.as_deref() == Some(&item)) {
                    Some(i) => {
                        key_items.push(i);
                        partition_keys.push((c, t));
                    }
                    None => all_projected = false,
                }
            }
            if !all_projected {
                // As ksqlDB, the message names every partitioning expression.
                let missing: Vec<String> = select.partition_by.iter().map(|pe| pe.to_string()).collect();
                let (noun, list) = describe_missing("partitioning expression", &missing);
                return Err(SqlError::statement(format!(
                    "The query used to build `{sink_name}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                    missing.join(", ")
                )));
            }
        } else if fk {
            let (left, _) = &sources[0];
            let mut missing = vec![];
            for (i, k) in left.keys.iter().enumerate() {
                let c = format!("{:?}", CExpr::Column(i));
                match canon.iter().position(|x| x.as_deref() == Some(&c)) {
                    Some(p) => {
                        if let Some(j) = (p + 1..named.len()).find(|&j| canon[j] == canon[p]) {
                            let (x, y) = (&named[p].1, &named[j].1);
                            let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
                            bail!(
                                "The projection contains a key column (`{}_{}`) more than once, aliased as: {lo} and {hi}.",
                                sources[0].1,
                                k.name
                            );
                        }
                        key_items.push(p)
                    }
                    None => missing.push(format!("`{}`", k.name)),
                }
            }
            if !missing.is_empty() {
                return Err(SqlError::statement(format!(
                    "Primary key column{} missing in projection. For foreign-key table-table joins, the projection must include all primary key columns from the left input table (`{}`). Missing column{}: {}.",
                    if missing.len() > 1 { "s" } else { "" },
                    left.name,
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", ")
                )));
            }
        } else {
            // The last join's columns, and those of earlier joins on the same key.
            let mut candidates: Vec<(usize, String)> = vec![];
            if synthetic {
                candidates.push((rowkey_idx, rowkey_name.clone()));
            } else {
                candidates.extend(on_columns.last().cloned().unwrap_or_default());
                for cols in on_columns.iter().rev().skip(1) {
                    if cols.iter().any(|(i, _)| candidates.iter().any(|(c, _)| c == i)) {
                        for c in cols {
                            if !candidates.iter().any(|(x, _)| x == &c.0) {
                                candidates.push(c.clone());
                            }
                        }
                    }
                }
                candidates.sort_by_key(|(i, _)| *i);
            }
            let keys: Vec<String> = candidates.iter().map(|(i, _)| format!("{:?}", CExpr::Column(*i))).collect();
            let found: Vec<usize> = canon
                .iter()
                .enumerate()
                .filter(|(_, c)| keys.iter().any(|k| c.as_deref() == Some(k)))
                .map(|(i, _)| i)
                .collect();
            match found.as_slice() {
                [] => {
                    let names: Vec<String> = candidates.iter().map(|(_, d)| d.clone()).collect();
                    let list = match names.len() {
                        1 => names[0].clone(),
                        _ => {
                            let (last, rest) = names.split_last().expect("two candidates");
                            format!("{} or {last}", rest.join(", "))
                        }
                    };
                    let noun = if names.len() == 1 { "join expression" } else { "join expressions" };
                    let mut msg = format!(
                        "The query used to build `{sink_name}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                        names[0]
                    );
                    if synthetic {
                        msg = format!("Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\n{msg}\n{rowkey_name} was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased.");
                    }
                    return Err(SqlError::statement(msg));
                }
                [one] => key_items.push(*one),
                [first, second, ..] => {
                    if canon[*first] == canon[*second] {
                        let (x, y) = (named[*first].1.clone(), named[*second].1.clone());
                        let (lo, hi) = if x <= y { (&x, &y) } else { (&y, &x) };
                        return Err(SqlError::statement(format!(
                            "The projection contains a key column (`{x}`) more than once, aliased as: {lo} and {hi}."
                        )));
                    }
                    // Several join columns are projected: the key is the earliest source's.
                    let rank = |i: &usize| keys.iter().position(|k| canon[*i].as_deref() == Some(k.as_str()));
                    key_items.push(found.iter().copied().min_by_key(rank).unwrap_or(*first));
                }
            }
        }
        let mut key_exprs = vec![];
        let mut key_fields = vec![];
        for (n, &i) in key_items.iter().enumerate() {
            let (c, t) = compiler.compile(&named[i].0).map_err(select_error)?;
            // A join key named by a bare qualified column is called ALIAS_COLUMN.
            if !explicit_alias[i] {
                if let Expr::Column { qualifier: Some(q), name, .. } = &named[i].0 {
                    named[i].1 = format!("{q}_{name}");
                }
            }
            check_key_type(&named[i].1, &t)?;
            // The key is the join key's value, whichever side it came from; the item names it.
            // (Partitioned: the PARTITION BY expression's value.)
            let (c, t) = match partition_keys.get(n) {
                Some(k) => k.clone(),
                None if fk => (c, t),
                None => (CExpr::Column(rowkey_idx), key_type.clone()),
            };
            key_exprs.push(c);
            key_fields.push(Field { name: named[i].1.clone(), ty: t });
        }
        let (value_exprs, value_fields) = compile_values(&mut compiler, &named, |i| key_items.contains(&i))?;
        check_duplicates(&key_fields, &value_fields)?;
        let kind = if sources.iter().all(|(s, _)| s.kind == Table) { Table } else { Stream };
        let (key_serde, value_serde) = serdes_from_props(props, Some(&sources[0].0), &self.properties)?;
        let sink_topic = sink_topic(existing_sink, props, &self.sink_topic_default(sink_name));
        let output = self.output_def(
            sink_name,
            kind,
            sink_topic,
            key_fields,
            value_fields,
            key_serde,
            value_serde,
            // A join of two windowed streams is windowed as its left input is.
            stages.first().and_then(|s| s.window_key[0]).and(sources[0].0.window),
            existing_sink,
        )?;
        let single = stages.len() == 1;
        let last = stages.last_mut().expect("at least one join");
        last.filter = filter;
        if single {
            crate::join::push_down(last);
        }
        last.key = transient_key(self, key_exprs, &value_exprs);
        last.value = value_exprs;
        let mut sources = sources.into_iter().map(|(s, _)| s);
        let input = sources.next().expect("the FROM source");
        Ok(Planned { kind, input, rights: sources.collect(), output, plan: Plan::Join(stages, None) })
    }

    /// Plans an aggregation of a join's result (`SELECT ... FROM a JOIN b ... GROUP BY`): the
    /// join stages, then the aggregation over the joined row (its scope: every source's
    /// columns), with WHERE applied by the aggregation. A join with a stream is aggregated as a
    /// stream; a join of tables by their keys as a table keyed by the join key (a change
    /// takes back the key's previous contribution). Foreign-key joins are not aggregated.
    #[allow(clippy::too_many_arguments)]
    fn plan_join_aggregate(
        &self,
        select: &Select,
        sources: Vec<(SourceDef, String)>,
        stages: Vec<crate::join::JoinPlan>,
        scope: &Scope,
        filter: Option<CExpr>,
        named: Vec<(Expr, String)>,
        props: &BTreeMap<String, Value>,
        existing_sink: Option<&SourceDef>,
        sink_name: &str,
    ) -> Result<Planned> {
        let tables = sources.iter().all(|(s, _)| s.kind == SourceKind::Table);
        if stages.iter().any(|s| s.shape == crate::join::JoinShape::ForeignKey) {
            return Err(SqlError::statement(
                "Aggregating the result of a foreign-key join is not supported: aggregate a table created from the join instead.",
            ));
        }
        // As ksqlDB (https://github.com/confluentinc/ksql/issues/5931): window bounds are not
        // columns of an aggregated join.
        for (e, _) in &named {
            if let Expr::Column { name, .. } = e {
                if name == WINDOWSTART || name == WINDOWEND {
                    return Err(SqlError::statement(format!("SELECT column '{name}' cannot be resolved.")));
                }
            }
        }
        // What the aggregation reads: the joined rows, in the left source's formats.
        let kind = if tables { SourceKind::Table } else { SourceKind::Stream };
        let joined = SourceDef { kind, window: None, ..sources[0].0.clone() };
        let (key_serde, value_serde) = serdes_from_props(props, Some(&sources[0].0), &self.properties)?;
        let sink_topic = sink_topic(existing_sink, props, &self.sink_topic_default(sink_name));
        let mut planned = self.plan_aggregate(
            select,
            &joined,
            scope,
            filter,
            named,
            key_serde,
            value_serde,
            sink_name,
            sink_topic,
            existing_sink,
        )?;
        let Plan::Aggregate(aggregate) = planned.plan else { unreachable!("plan_aggregate plans an aggregation") };
        planned.plan = Plan::Join(stages, Some(Box::new(aggregate)));
        let mut sources = sources.into_iter().map(|(s, _)| s);
        planned.input = sources.next().expect("the FROM source");
        planned.rights = sources.collect();
        Ok(planned)
    }

    /// Inserts a record into a topic as a source's serde would encode it (used by tests and
    /// the REST API's INSERT VALUES path).
    pub fn produce_raw(&self, topic: &str, record: Record) -> Result<()> {
        let partitions = self.topics.partitions(topic).unwrap_or(0);
        if partitions == 0 {
            self.topics.create_topic(topic, 1)?;
        }
        self.topics.append(topic, 0, vec![record])?;
        Ok(())
    }
}

pub(crate) struct Planned {
    pub(crate) kind: SourceKind,
    pub(crate) input: SourceDef,
    pub(crate) rights: Vec<SourceDef>,
    pub(crate) output: SourceDef,
    pub(crate) plan: Plan,
}

fn describe_missing(noun: &str, missing: &[String]) -> (String, String) {
    if missing.len() == 1 {
        (noun.to_string(), missing[0].clone())
    } else {
        let (last, rest) = missing.split_last().expect("non-empty");
        (format!("{noun}s"), format!("{} and {last}", rest.join(", ")))
    }
}

/// The WITH clause's TIMESTAMP column must exist among `columns` and hold a time.
fn check_timestamp_column<'a>(mut columns: impl Iterator<Item = &'a Field>, ts: &str) -> Result<()> {
    let col = columns.find(|f| f.name == ts).ok_or_else(|| {
        SqlError::statement(format!("The TIMESTAMP column set in the WITH clause does not exist in the schema: '{ts}'"))
    })?;
    if !matches!(col.ty, SqlType::BigInt | SqlType::Timestamp | SqlType::String) {
        return Err(SqlError::statement(format!(
            "Timestamp column, `{ts}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp_format specified."
        )));
    }
    Ok(())
}

fn qualified_display(e: &Expr, source: &str) -> String {
    qualify(e, source).to_string()
}

/// An expression with its unqualified columns qualified by `source` (through function calls,
/// operators, casts and field accesses), as ksqlDB rewrites a statement's expressions.
fn qualify(e: &Expr, source: &str) -> Expr {
    let q = |x: &Expr| Box::new(qualify(x, source));
    match e {
        Expr::Column { qualifier: None, name, pos } if !name.starts_with('$') => {
            Expr::Column { qualifier: Some(source.to_string()), name: name.clone(), pos: *pos }
        }
        Expr::Function { name, args, star, distinct, pos } => Expr::Function {
            name: name.clone(),
            args: args.iter().map(|a| qualify(a, source)).collect(),
            star: *star,
            distinct: *distinct,
            pos: *pos,
        },
        Expr::Binary(op, a, b) => Expr::Binary(*op, q(a), q(b)),
        Expr::Unary(op, a) => Expr::Unary(*op, q(a)),
        Expr::Cast(a, t) => Expr::Cast(q(a), t.clone()),
        Expr::Field(a, f) => Expr::Field(q(a), f.clone()),
        Expr::Subscript(a, i) => Expr::Subscript(q(a), q(i)),
        other => other.clone(),
    }
}

/// A CREATE TABLE AS SELECT of an aggregation as ksqlDB prints it back in errors: columns
/// qualified by the source's alias, every projection named, one item a line.
fn ctas_text(sink: &str, props: &BTreeMap<String, Value>, select: &Select, named: &[(Expr, String)]) -> String {
    let alias = select.from.alias();
    let mut out = format!("CREATE TABLE {sink}");
    if !props.is_empty() {
        let shown: Vec<String> = props
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}='{}'", s.replace('\'', "''")),
                other => format!("{k}={other}"),
            })
            .collect();
        out.push_str(&format!(" WITH ({})", shown.join(", ")));
    }
    out.push_str(" AS SELECT\n");
    let items: Vec<String> = named.iter().map(|(e, n)| format!("  {} {n}", qualify(e, alias))).collect();
    out.push_str(&items.join(",\n"));
    out.push_str(&format!("\nFROM {} {alias}", select.from.name));
    if let Some(w) = &select.filter {
        out.push_str(&format!("\nWHERE {}", qualify(w, alias)));
    }
    if !select.group_by.is_empty() {
        let groups: Vec<String> = select.group_by.iter().map(|g| qualify(g, alias).to_string()).collect();
        out.push_str(&format!("\nGROUP BY {}", groups.join(", ")));
    }
    if let Some(h) = &select.having {
        out.push_str(&format!("\nHAVING {}", qualify(h, alias)));
    }
    out.push_str("\nEMIT CHANGES");
    out
}

/// Names projection items: an alias, a column's name, a field's name (with a `_n` suffix when a
/// source column or an earlier item has that name, as ksqlDB does), else `KSQL_COL_n` (the first
/// n not already taken).
pub(crate) fn name_items(items: Vec<(Expr, Option<String>)>, scope: &Scope) -> Vec<(Expr, String)> {
    let mut used: HashSet<String> = items
        .iter()
        .filter_map(|(e, a)| a.clone().or_else(|| matches!(e, Expr::Column { .. }).then(|| natural_name(e)).flatten()))
        .collect();
    let mut taken: HashSet<String> = used.clone();
    taken.extend(scope.columns.iter().map(|c| c.name.clone()));
    let mut next_gen = 0;
    items
        .into_iter()
        .map(|(e, a)| {
            let field = match (&a, &e) {
                (None, Expr::Field(_, f)) => Some(f.clone()),
                _ => None,
            };
            let n = match field {
                Some(f) => {
                    let mut n = f.clone();
                    let mut i = 0;
                    while taken.contains(&n) {
                        i += 1;
                        n = format!("{f}_{i}");
                    }
                    n
                }
                None => a.or_else(|| natural_name(&e)).unwrap_or_else(|| loop {
                    let n = format!("KSQL_COL_{next_gen}");
                    next_gen += 1;
                    if !used.contains(&n) && taken.insert(n.clone()) {
                        break n;
                    }
                }),
            };
            taken.insert(n.clone());
            used.insert(n.clone());
            (e, n)
        })
        .collect()
}

/// A transient query has no key columns; its "key" is the whole projection, so that a deletion
/// (evaluated on a row whose value columns are null) shows as a tombstone row of the projection.
fn transient_key(engine: &Engine, key: Vec<CExpr>, value: &[CExpr]) -> Vec<CExpr> {
    if engine.transient.get() {
        value.to_vec()
    } else {
        key
    }
}

/// Compiles the projection items that are not key columns into the value columns.
fn compile_values(
    compiler: &mut Compiler,
    named: &[(Expr, String)],
    is_key: impl Fn(usize) -> bool,
) -> Result<(Vec<CExpr>, Vec<Field>)> {
    let mut exprs = vec![];
    let mut fields = vec![];
    for (i, (e, n)) in named.iter().enumerate() {
        if is_key(i) {
            continue;
        }
        let (c, t) = compiler.compile(e).map_err(select_error)?;
        exprs.push(c);
        fields.push(Field { name: n.clone(), ty: t });
    }
    Ok((exprs, fields))
}

/// The topic a query writes: the existing sink's, KAFKA_TOPIC, or the sink's name.
fn sink_topic(existing: Option<&SourceDef>, props: &BTreeMap<String, Value>, sink_name: &str) -> String {
    existing
        .map(|s| s.topic.clone())
        .or_else(|| prop_string(props, "KAFKA_TOPIC"))
        .unwrap_or_else(|| sink_name.to_string())
}

/// "Column 'X' cannot be resolved." becomes "<CLAUSE> column 'X' cannot be resolved.", as ksqlDB
/// says where the unknown column is.
pub(crate) fn unresolved_in(clause: &str, e: SqlError) -> SqlError {
    match e.message.strip_prefix("Column ") {
        Some(rest) if rest.ends_with("cannot be resolved.") => {
            SqlError { message: format!("{clause} column {rest}"), ..e }
        }
        _ => e,
    }
}

/// An error compiling a SELECT item, worded as ksqlDB words it.
fn select_error(e: SqlError) -> SqlError {
    let e = unresolved_in("SELECT", e);
    if e.message.starts_with("Cast of ") {
        return SqlError { message: format!("Invalid Select: {}", e.message), ..e };
    }
    e
}

/// A key column may appear in the projection only once: `SELECT K, K AS K2` is refused.
fn duplicate_key_check(named: &[(Expr, String)], canon: &[Option<String>], first: usize) -> Result<()> {
    let again = (first + 1..named.len()).find(|&j| canon[j].is_some() && canon[j] == canon[first]);
    if let Some(j) = again {
        let (x, y) = (&named[first].1, &named[j].1);
        let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
        bail!("The projection contains a key column (`{x}`) more than once, aliased as: {lo} and {hi}.");
    }
    Ok(())
}

/// `s->*` is expanded before planning ([`Engine::expand_struct_all`]); meeting one later is a bug.
pub(crate) fn bail_unexpanded(e: &Expr) -> Result<()> {
    Err(SqlError::statement(format!("{e}->* was not expanded into the fields of the struct")))
}

/// For each expanded projection item, whether the user gave it an alias (`AS name`).
fn select_aliases(select: &[SelectItem], items: &[(Expr, Option<String>)]) -> Vec<bool> {
    let explicit: HashSet<String> = select
        .iter()
        .filter_map(|i| match i {
            SelectItem::Expr { alias: Some(a), .. } => Some(a.clone()),
            _ => None,
        })
        .collect();
    items.iter().map(|(_, a)| a.as_ref().is_some_and(|a| explicit.contains(a))).collect()
}

/// The first window bound column (WINDOWSTART or WINDOWEND) an expression mentions.
fn first_window_bound(e: &Expr) -> Option<&'static str> {
    let mut found = None;
    e.walk(&mut |x| {
        if let Expr::Column { name, .. } = x {
            if found.is_none() {
                found = [WINDOWSTART, WINDOWEND].into_iter().find(|n| name == n);
            }
        }
    });
    found
}

/// Window bounds are only known after aggregation: using them before is a clear error.
fn window_bounds_error(e: SqlError) -> SqlError {
    for n in [WINDOWSTART, WINDOWEND] {
        if e.message == format!("Column '{n}' cannot be resolved.") {
            return SqlError::statement(format!(
                "Window bounds column {n} can only be used in the SELECT clause of windowed aggregations"
            ));
        }
    }
    e
}

/// The name a select item gets without an alias: a column's name or a struct field's name.
fn natural_name(e: &Expr) -> Option<String> {
    match e {
        // Internal columns (table function results) get generated names.
        Expr::Column { name, .. } if name.starts_with('$') => None,
        Expr::Column { name, .. } => Some(name.clone()),
        Expr::Field(_, f) => Some(f.clone()),
        _ => None,
    }
}

/// The resolved form of an expression, to tell whether two expressions are the same.
fn canonical(scope: &Scope, e: &Expr) -> Option<String> {
    Compiler::new(scope).compile(e).ok().map(|(c, _)| format!("{c:?}"))
}

fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| {
        if let Expr::Function { name, .. } = x {
            if functions::is_aggregate(&name.to_ascii_uppercase()) {
                found = true;
            }
        }
    });
    found
}

fn aggregate_name(e: &Expr) -> Option<String> {
    let mut found = None;
    e.walk(&mut |x| {
        if let Expr::Function { name, .. } = x {
            if found.is_none() && functions::is_aggregate(&name.to_ascii_uppercase()) {
                found = Some(name.to_ascii_uppercase());
            }
        }
    });
    found
}

/// Aggregate calls in an expression (not descending into them), deduplicated by text.
fn collect_aggregates(e: &Expr, out: &mut Vec<Expr>) {
    if let Expr::Function { name, args, .. } = e {
        if functions::is_aggregate(&name.to_ascii_uppercase()) {
            if !out.iter().any(|c| c.to_string() == e.to_string()) {
                out.push(e.clone());
            }
            return;
        }
        for a in args {
            collect_aggregates(a, out);
        }
        return;
    }
    match e {
        Expr::Field(b, _) | Expr::Unary(_, b) | Expr::Cast(b, _) => collect_aggregates(b, out),
        Expr::IsNull { expr, .. } => collect_aggregates(expr, out),
        Expr::Subscript(a, b) | Expr::Binary(_, a, b) => {
            collect_aggregates(a, out);
            collect_aggregates(b, out)
        }
        Expr::IsDistinct { left, right, .. } => {
            collect_aggregates(left, out);
            collect_aggregates(right, out)
        }
        Expr::Between { expr, low, high, .. } => {
            collect_aggregates(expr, out);
            collect_aggregates(low, out);
            collect_aggregates(high, out)
        }
        Expr::InList { expr, list, .. } => {
            collect_aggregates(expr, out);
            list.iter().for_each(|e| collect_aggregates(e, out))
        }
        Expr::Like { expr, pattern, .. } => {
            collect_aggregates(expr, out);
            collect_aggregates(pattern, out)
        }
        Expr::Case { operand, whens, otherwise } => {
            if let Some(o) = operand {
                collect_aggregates(o, out)
            }
            for (w, t) in whens {
                collect_aggregates(w, out);
                collect_aggregates(t, out)
            }
            if let Some(o) = otherwise {
                collect_aggregates(o, out)
            }
        }
        Expr::Array(items) => items.iter().for_each(|e| collect_aggregates(e, out)),
        Expr::Map(entries) => entries.iter().for_each(|(k, v)| {
            collect_aggregates(k, out);
            collect_aggregates(v, out)
        }),
        Expr::Struct(fields) => fields.iter().for_each(|(_, e)| collect_aggregates(e, out)),
        _ => {}
    }
}

fn check_duplicates(keys: &[Field], values: &[Field]) -> Result<()> {
    let mut seen = HashSet::new();
    for f in keys.iter().chain(values) {
        if !seen.insert(&f.name) {
            return Err(SqlError::statement(format!("Duplicate value columns found in schema: `{}` {}", f.name, f.ty)));
        }
    }
    Ok(())
}

fn contains_map(t: &SqlType) -> bool {
    match t {
        SqlType::Map(..) => true,
        SqlType::Array(e) => contains_map(e),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}

fn check_key_type(name: &str, t: &SqlType) -> Result<()> {
    if contains_map(t) {
        return Err(SqlError::statement(format!(
            "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{name}`. Column type: {t}. See https://github.com/confluentinc/ksql/issues/6621 for more."
        )));
    }
    Ok(())
}

fn window_from_props(props: &BTreeMap<String, Value>) -> Result<Option<WindowKind>> {
    let Some(t) = prop_string(props, "WINDOW_TYPE") else {
        return Ok(None);
    };
    let size = prop_string(props, "WINDOW_SIZE").map(|s| parse_duration_text(&s)).transpose()?;
    Ok(Some(match t.to_ascii_uppercase().as_str() {
        "SESSION" if size.is_some() => {
            return Err(SqlError::statement("'WINDOW_SIZE' should not be set for SESSION windows."));
        }
        "SESSION" => WindowKind::Session { gap: 0 },
        "TUMBLING" => WindowKind::Tumbling {
            size: size.ok_or_else(|| SqlError::statement("Tumbling windows require 'WINDOW_SIZE' to be provided in the WITH clause. For example: 'WINDOW_SIZE'='10 SECONDS'"))?,
        },
        "HOPPING" => {
            let size = size.ok_or_else(|| SqlError::statement("Hopping windows require 'WINDOW_SIZE' to be provided in the WITH clause. For example: 'WINDOW_SIZE'='10 SECONDS'"))?;
            WindowKind::Hopping { size, advance: size }
        }
        other => {
            return Err(SqlError::statement(format!(
                "Unknown window type: {other}"
            )))
        }
    }))
}

fn parse_duration_text(s: &str) -> Result<i64> {
    let mut parts = s.split_whitespace();
    let n: i64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| SqlError::statement(format!("Invalid duration: {s}")))?;
    let unit = parts.next().unwrap_or("MILLISECONDS");
    let ms = parser::time_unit_ms(unit).ok_or_else(|| SqlError::statement(format!("Invalid duration: {s}")))?;
    Ok(n * ms)
}

/// Key and value serdes from WITH properties, defaulting to the input source's (for derived
/// sources) or KAFKA keys (for declared ones).
/// A `KEY_DELIMITER` / `VALUE_DELIMITER` value: one character, or `TAB` / `SPACE` by name.
fn delimiter(name: &str, d: &str) -> Result<char> {
    let invalid = |why: String| {
        SqlError::statement(format!("Configuration {name} is invalid: {why}\nExample valid value: ';'"))
            .in_phase(crate::error::BUILDING)
    };
    match d.to_ascii_uppercase().as_str() {
        "TAB" => Ok('\t'),
        "SPACE" => Ok(' '),
        _ if d.trim().is_empty() => Err(invalid(
            "Delimiter cannot be empty, if you meant to have a tab or space for delimiter, please use the special values 'TAB' or 'SPACE'".into(),
        )),
        _ if d.chars().count() == 1 => Ok(d.chars().next().unwrap_or(',')),
        _ => Err(invalid(format!(
            "Invalid delimiter value: '{d}'. Delimiter must be a single character or TAB,SPACE"
        ))),
    }
}

/// Checks the format properties of a WITH clause before anything else of the statement: delimiters
/// are well formed and only given to formats that take them.
fn check_format_props(props: &BTreeMap<String, Value>) -> Result<()> {
    let format = prop_string(props, "FORMAT");
    for (side, delim, full_name) in [
        ("KEY", "KEY_DELIMITER", "KEY_AVRO_SCHEMA_FULL_NAME"),
        ("VALUE", "VALUE_DELIMITER", "VALUE_AVRO_SCHEMA_FULL_NAME"),
    ] {
        let fmt = prop_string(props, &format!("{side}_FORMAT")).or_else(|| format.clone());
        let fmt = fmt.map(|f| f.to_ascii_uppercase());
        if let Some(d) = prop_string(props, delim) {
            delimiter(delim, &d)?;
            if let Some(f) = fmt.as_deref().filter(|f| *f != "DELIMITED") {
                bail!("{f} does not support the following configs: [delimiter]");
            }
        }
        if prop_string(props, full_name).is_some() {
            if let Some(f) = fmt.as_deref().filter(|f| !matches!(*f, "AVRO" | "PROTOBUF" | "PROTOBUF_NOSR")) {
                bail!("{f} does not support the following configs: [fullSchemaName]");
            }
        }
    }
    Ok(())
}

/// The key format of a source that names none and has none to inherit:
/// `ksql.persistence.default.format.key`, else KAFKA.
fn default_key_format(defaults: &BTreeMap<String, String>) -> Result<Format> {
    match defaults.get("ksql.persistence.default.format.key") {
        Some(f) => Format::parse(f),
        None => Ok(Format::Kafka),
    }
}

fn serdes_from_props(
    props: &BTreeMap<String, Value>,
    input: Option<&SourceDef>,
    defaults: &BTreeMap<String, String>,
) -> Result<(Serde, Serde)> {
    let format = prop_string(props, "FORMAT");
    let key_format = prop_string(props, "KEY_FORMAT");
    let value_format = prop_string(props, "VALUE_FORMAT");
    for (given, name) in [(&key_format, "KEY_FORMAT"), (&value_format, "VALUE_FORMAT")] {
        if format.is_some() && given.is_some() {
            return Err(SqlError::statement(format!(
                "Cannot supply both '{name}' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'."
            )));
        }
    }
    let mut key = match key_format.or_else(|| format.clone()) {
        Some(f) => Serde { explicit: true, ..Serde::new(Format::parse(&f)?) },
        None => match input {
            Some(i) => Serde { explicit: false, ..i.key_serde.clone() },
            None => Serde::new(default_key_format(defaults)?),
        },
    };
    let mut value = match value_format.or(format) {
        Some(f) => Serde::new(Format::parse(&f)?),
        None => match input {
            Some(i) => Serde { unwrapped: false, ..i.value_serde.clone() },
            None => match defaults.get("ksql.persistence.default.format.value") {
                Some(f) => Serde::new(Format::parse(f)?),
                None => {
                    return Err(SqlError::statement(
                        "Statement is missing the 'VALUE_FORMAT' property from the WITH clause. Either provide one or set a default via the 'ksql.persistence.default.format.value' config.",
                    ))
                }
            },
        },
    };
    // Single JSON key columns are written bare, as ksqlDB does.
    key.unwrapped = true;
    if let Some(w) = prop_string(props, "WRAP_SINGLE_VALUE") {
        value.unwrapped = !w.eq_ignore_ascii_case("true");
    }
    for (name, serde) in [("VALUE_DELIMITER", &mut value), ("KEY_DELIMITER", &mut key)] {
        if let Some(d) = prop_string(props, name) {
            serde.delimiter = delimiter(name, &d)?;
        }
    }
    if value.format == Format::Kafka {
        value.unwrapped = true;
    }
    Ok((key, value))
}

/// A projected bare NULL has no type for the sink's schema: ksqlDB asks for a CAST.
fn check_typed(expr: &Expr) -> Result<()> {
    if matches!(expr, Expr::Literal(Value::Null)) {
        return Err(SqlError::statement(
            "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR).",
        ));
    }
    Ok(())
}
