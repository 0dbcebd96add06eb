//! Transient queries, the answers to a client's SELECT:
//! - pull queries read the current contents of a table (its materialized state) or the records
//!   of a stream up to now, answer, and end;
//! - push queries (`EMIT CHANGES`) run like a persistent query whose output rows go to their
//!   client instead of a topic, until LIMIT or until the client goes away.
//!
//! A table's materialized state is the latest record per key of its topic, read incrementally
//! (only what is new since the last pull query), per partition, in key order, kept in a store
//! file ([`crate::materialized`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ast::*;
use crate::catalog::{SourceDef, ROWOFFSET, ROWPARTITION, WINDOWEND, WINDOWSTART};
use crate::engine::Engine;
use crate::error::{Result, SqlError};
use crate::expr::{CExpr, Compiler, Env};
use crate::query::{ProcessingError, Query};
use crate::topics::{Consumed, Topics};
use crate::types::SqlType;
use crate::value::Value;

/// A column of a transient query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    /// A key column of the table queried (ksqlDB marks them `KEY` in the header).
    pub key: bool,
}

/// The header schema as ksqlDB's REST API writes it: "`ID` STRING KEY, `COUNT` BIGINT".
pub fn schema_string(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("`{}` {}{}", c.name, c.ty, if c.key { " KEY" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pull query's answer.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// The closing message, if any (`Query Completed` after a stream's records).
    pub final_message: Option<String>,
}

/// A running push query.
pub struct PushQuery {
    pub columns: Vec<Column>,
    query: Query,
    limit: Option<u64>,
    sent: u64,
    /// The result is a table (its deletions are tombstones).
    table: bool,
}

impl PushQuery {
    /// Starts reading from the current end of the inputs (`auto.offset.reset=latest`).
    pub fn seek_to_end(&mut self, topics: &Arc<dyn Topics>) {
        self.query.seek_to_end(topics);
    }

    /// Processes what is new on the inputs; returns the new result rows (at most up to LIMIT),
    /// each with whether it is a table's tombstone (a deleted row: its key columns set, the
    /// rest null).
    pub fn poll(
        &mut self,
        topics: &Arc<dyn Topics>,
        errors: &mut Vec<ProcessingError>,
    ) -> Result<Vec<(Vec<Value>, bool)>> {
        let mut rows = vec![];
        if self.finished() {
            return Ok(rows);
        }
        // One bounded step at a time, so a client gets rows while a big backlog is read.
        self.query.step(topics, errors)?;
        for (key, value, _, _) in self.query.collected.as_mut().map(std::mem::take).unwrap_or_default() {
            if self.finished() {
                break;
            }
            rows.push(match value {
                Some(v) => (v, false),
                None => (key, self.table),
            });
            self.sent += 1;
        }
        Ok(rows)
    }

    /// Whether LIMIT rows have been produced.
    pub fn finished(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l)
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }
}

/// Where a SELECT item's value comes from, for the KEY marks of a table's header.
fn is_key_column(src: &SourceDef, e: &Expr) -> bool {
    match e {
        Expr::Column { name, .. } => {
            src.keys.iter().any(|k| &k.name == name)
                || (src.window.is_some() && (name == WINDOWSTART || name == WINDOWEND))
        }
        _ => false,
    }
}

/// The pseudo-columns a pull query on a table cannot use, found in an expression.
fn disallowed_pseudo_columns(e: &Expr, found: &mut Vec<String>) {
    e.walk(&mut |x| {
        if let Expr::Column { name, .. } = x {
            if (name == ROWPARTITION || name == ROWOFFSET) && !found.contains(name) {
                found.push(name.clone());
            }
        }
    });
}

fn split_binary(e: &Expr, op: BinaryOp, out: &mut Vec<Expr>) {
    match e {
        Expr::Binary(o, a, b) if *o == op => {
            split_binary(a, op, out);
            split_binary(b, op, out);
        }
        other => out.push(other.clone()),
    }
}

fn has_columns(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= matches!(x, Expr::Column { .. }));
    found
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(Value::Null))
}

/// The record keys a pull query on a table can seek instead of scanning: when the table's key
/// is one KAFKA-format column of type STRING, INT or BIGINT (whose encodings are canonical: a
/// value has exactly one byte form, the one any producer writes) and a top-level conjunct of
/// WHERE is `key = literal` or `key IN (literals)`. Encoded and sorted (the scan's order within
/// a partition); literals that equal no key of that type are left out. `None`: scan. The rows
/// found still go through the whole WHERE.
fn lookup_keys(src: &SourceDef, filter: Option<&Expr>) -> Option<Vec<Vec<u8>>> {
    if src.window.is_some() || src.keys.len() != 1 || src.key_serde.format != crate::format::Format::Kafka {
        return None;
    }
    let key = &src.keys[0];
    if !matches!(key.ty, SqlType::String | SqlType::Int | SqlType::BigInt) {
        return None;
    }
    let is_key = |e: &Expr| matches!(e, Expr::Column { name, .. } if *name == key.name);
    let mut conjuncts = vec![];
    split_binary(filter?, BinaryOp::And, &mut conjuncts);
    for c in &conjuncts {
        let literals: Vec<&Value> = match c {
            Expr::Binary(BinaryOp::Eq, a, b) => match (&**a, &**b) {
                (k, Expr::Literal(v)) | (Expr::Literal(v), k) if is_key(k) => vec![v],
                _ => continue,
            },
            Expr::InList { expr, list, negated: false } if is_key(expr) => {
                let Some(values) = list.iter().map(|e| if let Expr::Literal(v) = e { Some(v) } else { None }).collect()
                else {
                    continue;
                };
                values
            }
            _ => continue,
        };
        let mut keys = vec![];
        for v in literals {
            let v = match (&key.ty, v) {
                (SqlType::String, Value::String(_))
                | (SqlType::Int, Value::Int(_))
                | (SqlType::BigInt, Value::BigInt(_)) => v.clone(),
                (SqlType::BigInt, Value::Int(i)) => Value::BigInt(*i as i64),
                (SqlType::Int, Value::BigInt(i)) => match i32::try_from(*i) {
                    Ok(i) => Value::Int(i),
                    Err(_) => continue,
                },
                // `= NULL` is never true.
                (_, Value::Null) => continue,
                _ => return None,
            };
            keys.push(crate::format::kafka_encode(&v).ok()?);
        }
        keys.sort();
        keys.dedup();
        return Some(keys);
    }
    None
}

/// The refusal of a pull query that needs a table scan while table scans are disabled.
const TABLE_SCAN_REQUIRED: &str =
    "Query requires table scan to be enabled. Table scans can be enabled by setting ksql.query.pull.table.scan.enabled=true";

/// Checks a WHERE clause ksqlDB can answer by key lookups (and range scans of STRING keys)
/// alone, without scanning the table: each disjunct bounds every key column, once, by `=`, IN
/// or (string keys, range scans enabled) a range, against expressions without columns.
fn check_key_lookup(src: &SourceDef, filter: Option<&Expr>, range_scans: bool) -> Result<()> {
    let err = |m: &str| Err(SqlError::statement(m.to_string()));
    let Some(filter) = filter else {
        return err(TABLE_SCAN_REQUIRED);
    };
    let mut disjuncts = vec![];
    split_binary(filter, BinaryOp::Or, &mut disjuncts);
    let key_of = |e: &Expr| match e {
        Expr::Column { name, .. } => src.keys.iter().position(|k| &k.name == name),
        _ => None,
    };
    let touches_key = |e: &Expr| {
        let mut found = false;
        e.walk(&mut |x| found |= key_of(x).is_some());
        found
    };
    let mut any_range = false;
    for d in &disjuncts {
        let mut conjuncts = vec![];
        split_binary(d, BinaryOp::And, &mut conjuncts);
        let mut bound = vec![0usize; src.keys.len()];
        let mut needs_scan = false;
        for c in &conjuncts {
            if !touches_key(c) {
                continue;
            }
            match c {
                Expr::Binary(op, a, b) if op.is_comparison() => {
                    let (key, other) = match (key_of(a), key_of(b)) {
                        (Some(k), None) => (k, b),
                        (None, Some(k)) => (k, a),
                        (Some(_), Some(_)) => {
                            return err("A comparison must be between a key column and a resolvable expression.")
                        }
                        (None, None) => return err("A comparison must directly reference a key column."),
                    };
                    if has_columns(other) {
                        return err("A comparison must be between a key column and a resolvable expression.");
                    }
                    match op {
                        BinaryOp::Eq => {}
                        BinaryOp::NotEq => {
                            return Err(SqlError::statement(format!(
                                "Bound on key columns '[`{}` {} KEY]' must currently be '='. ",
                                src.keys[key].name, src.keys[key].ty
                            )))
                        }
                        _ => {
                            if !range_scans || src.keys[key].ty != SqlType::String || src.window.is_some() {
                                needs_scan = true;
                            }
                            any_range = true;
                        }
                    }
                    bound[key] += 1;
                }
                Expr::InList { expr, list, negated: false } if key_of(expr).is_some() => {
                    if list.iter().any(has_columns) {
                        return err("A comparison must be between a key column and a resolvable expression.");
                    }
                    bound[key_of(expr).expect("checked")] += 1;
                }
                _ => return err("A comparison must directly reference a key column."),
            }
        }
        if bound.iter().any(|&n| n > 1) {
            return err(
                "A comparison condition on the key column cannot be combined with other comparisons such as an IN predicate",
            );
        }
        if needs_scan {
            return err(TABLE_SCAN_REQUIRED);
        }
        if bound.iter().all(|&n| n == 0) {
            return Err(SqlError::statement(format!("WHERE clause missing key column for disjunct: {d}")));
        }
        if bound.contains(&0) {
            return err("Multi-column sources must specify every key in the WHERE clause.");
        }
    }
    if any_range && disjuncts.len() > 1 {
        return err(TABLE_SCAN_REQUIRED);
    }
    Ok(())
}

/// Window bounds compared with text (`WINDOWSTART >= '2020-02-23T23:45'`): the text is a
/// (partial) timestamp, turned into epoch milliseconds.
fn window_bounds_as_millis(e: &Expr) -> Result<Expr> {
    let is_bound = |x: &Expr| matches!(x, Expr::Column { name, .. } if name == WINDOWSTART || name == WINDOWEND);
    let millis = |x: &Expr| -> Result<Expr> {
        match x {
            Expr::Literal(Value::String(t)) => crate::time::parse_partial_timestamp(t)
                .map(|ms| Expr::Literal(Value::BigInt(ms)))
                .ok_or_else(|| SqlError::statement(format!("Failed to parse timestamp '{t}'"))),
            other => Ok(other.clone()),
        }
    };
    Ok(match e {
        Expr::Binary(op, a, b) => {
            let (a2, b2) = (window_bounds_as_millis(a)?, window_bounds_as_millis(b)?);
            let (a2, b2) = if is_bound(a) {
                (a2, millis(&b2)?)
            } else if is_bound(b) {
                (millis(&a2)?, b2)
            } else {
                (a2, b2)
            };
            Expr::Binary(*op, Box::new(a2), Box::new(b2))
        }
        Expr::Between { expr, low, high, negated } if is_bound(expr) => Expr::Between {
            expr: expr.clone(),
            low: Box::new(millis(low)?),
            high: Box::new(millis(high)?),
            negated: *negated,
        },
        other => other.clone(),
    })
}

/// `KEY = NULL` and `KEY IN (NULL)` can never match, and an IN list must hold values of the
/// key's type: ksqlDB refuses them.
fn check_null_comparisons(src: &SourceDef, scope: &crate::expr::Scope, filter: &Expr) -> Result<()> {
    let mut problem: Option<SqlError> = None;
    filter.walk(&mut |x| {
        if problem.is_some() {
            return;
        }
        match x {
            Expr::Binary(op, a, b) if op.is_comparison() && (is_null_literal(a) != is_null_literal(b)) => {
                let other = if is_null_literal(a) { b } else { a };
                if let Ok((_, t)) = Compiler::new(scope).compile(other) {
                    problem = Some(SqlError::statement(format!(
                        "Error in WHERE expression: Comparison with NULL not supported: {t} {} NULL\nUse 'IS NULL' or 'IS NOT NULL' instead.\nStatement: {filter}",
                        op.symbol()
                    )));
                }
            }
            Expr::InList { expr, list, .. } => {
                let Expr::Column { name, .. } = expr.as_ref() else { return };
                let Some(key) = src.keys.iter().find(|k| &k.name == name) else { return };
                if list.iter().any(is_null_literal) {
                    problem = Some(SqlError::statement(format!("Primary key columns can not be NULL: ({name} = null)")));
                } else if let Some(Expr::Literal(Value::String(t))) =
                    list.iter().find(|i| matches!(i, Expr::Literal(Value::String(_))))
                {
                    if key.ty != SqlType::String {
                        problem = Some(SqlError::statement(format!(
                            "'{t}' can not be converted to the type of the key column: {name} {} KEY",
                            key.ty
                        )));
                    }
                }
            }
            _ => {}
        }
    });
    problem.map_or(Ok(()), Err)
}

impl Engine {
    /// Answers a pull query: the matching rows of a table's current contents, or of a stream's
    /// records up to now.
    pub fn pull_query(&mut self, select: &Select, props: &BTreeMap<String, String>) -> Result<PullResult> {
        let expanded = self.expand_struct_all(select)?;
        let select = expanded.as_ref().unwrap_or(select);
        let flag = |name: &str, default: bool| {
            props
                .get(name)
                .or_else(|| self.properties.get(name))
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(default)
        };
        let unsupported = |what: &str| {
            Err(SqlError::statement(format!(
                "Pull queries don't support {what} clauses. See https://cnfl.io/queries for more info.\nAdd EMIT CHANGES if you intended to issue a push query."
            )))
        };
        if select.limit.is_some() && !flag("ksql.query.pull.limit.clause.enabled", true) {
            return Err(SqlError::statement(
                "LIMIT clause in pull queries is currently disabled. You can enable them by setting ksql.query.pull.limit.clause.enabled=true. See https://cnfl.io/queries for more info.\nAdd EMIT CHANGES if you intended to issue a push query.",
            ));
        }
        if !select.joins.is_empty() {
            return unsupported("JOIN");
        }
        if select.window.is_some() {
            return unsupported("WINDOW");
        }
        if !select.group_by.is_empty() {
            return unsupported("GROUP BY");
        }
        if select.having.is_some() {
            return unsupported("HAVING");
        }
        if !select.partition_by.is_empty() {
            return unsupported("PARTITION BY");
        }
        let src =
            self.catalog.get(&select.from.name).cloned().ok_or_else(|| {
                SqlError::statement(format!("{} does not exist.", select.from.name)).at(select.from.pos)
            })?;
        let is_table = src.kind == SourceKind::Table;
        // Queryable: a table a query maintains, or a source table (CREATE SOURCE TABLE).
        if is_table && src.writer.is_none() && !src.read_only {
            return Err(SqlError::statement(format!(
                "The `{0}` table isn't queryable. To derive a queryable table, you can do 'CREATE TABLE QUERYABLE_{0} AS SELECT * FROM {0}'. See https://cnfl.io/queries for more info.",
                src.name
            )));
        }
        let alias = select.from.alias().to_string();
        let scope = src.scope(&alias);
        let col = |name: &str| Expr::Column { qualifier: None, name: name.to_string(), pos: Pos::default() };
        let mut items: Vec<(Expr, Option<String>)> = vec![];
        for item in &select.items {
            match item {
                SelectItem::Wildcard(q) => {
                    if let Some(q) = q {
                        if q != &alias && q != &src.name {
                            return Err(SqlError::statement(format!(
                                "'{q}' is not a valid stream/table name or alias."
                            )));
                        }
                    }
                    items.extend(src.transient_columns().into_iter().map(|n| (col(n), None)));
                }
                SelectItem::Expr { expr, alias } => items.push((expr.clone(), alias.clone())),
                SelectItem::StructAll(e) => crate::engine::bail_unexpanded(e)?,
            }
        }
        {
            let mut found = vec![];
            for (e, _) in &items {
                disallowed_pseudo_columns(e, &mut found);
            }
            if !found.is_empty() {
                let list: Vec<String> = found.iter().map(|n| format!("`{n}`")).collect();
                return Err(SqlError::statement(format!(
                    "Pull queries don't support the following columns in SELECT clauses: {}",
                    list.join(", ")
                )));
            }
            if let Some(f) = &select.filter {
                let mut found = vec![];
                disallowed_pseudo_columns(f, &mut found);
                if !found.is_empty() {
                    let list: Vec<String> = found.iter().map(|n| format!("`{n}`")).collect();
                    return Err(SqlError::statement(format!(
                        "Pull queries don't support the following columns in WHERE clauses: {}",
                        list.join(", ")
                    )));
                }
            }
        }
        let filter_expr = match &select.filter {
            Some(f) if src.window.is_some() => Some(window_bounds_as_millis(f)?),
            other => other.clone(),
        };
        if let Some(f) = &filter_expr {
            check_null_comparisons(&src, &scope, f)?;
        }
        if is_table && !flag("ksql.query.pull.table.scan.enabled", true) {
            check_key_lookup(&src, filter_expr.as_ref(), flag("ksql.query.pull.range.scan.enabled", true))?;
        }
        let named = crate::engine::name_items(items, &scope);
        let mut compiler = Compiler::new(&scope);
        let filter = match &filter_expr {
            Some(f) => {
                let (c, t) = compiler.compile(f).map_err(|e| {
                    if e.message.starts_with("Cannot compare") {
                        SqlError::statement(format!("Error in WHERE expression: {}\nStatement: {f}", e.message))
                    } else {
                        crate::engine::unresolved_in("WHERE", e)
                    }
                })?;
                if t != SqlType::Boolean {
                    return Err(SqlError::statement(format!(
                        "Type error in WHERE expression: Should evaluate to boolean but is {f} ({t}) instead."
                    )));
                }
                Some(c)
            }
            None => None,
        };
        let mut columns = vec![];
        let mut exprs: Vec<CExpr> = vec![];
        for (e, n) in &named {
            let (c, t) = compiler.compile(e)?;
            columns.push(Column { name: n.clone(), ty: t, key: is_table && is_key_column(&src, e) });
            exprs.push(c);
        }

        let topics = self.topics().clone();
        let mut env = Env::default();
        let mut rows = vec![];
        let limit = select.limit.map(|l| l as usize);
        let mut answer = |c: &Consumed, rows: &mut Vec<Vec<Value>>| -> bool {
            if limit.is_some_and(|l| rows.len() >= l) {
                return false;
            }
            // A record that cannot be read is not part of the answer.
            let Ok(Some(row)) = Query::decode(&src, &c.record, c.partition, c.offset, 0) else { return true };
            if let Some(f) = &filter {
                if !matches!(f.eval(&row.values, &mut env), Ok(Value::Boolean(true))) {
                    return true;
                }
            }
            let mut out = Vec::with_capacity(exprs.len());
            for e in &exprs {
                out.push(e.eval(&row.values, &mut env).unwrap_or(Value::Null));
            }
            rows.push(out);
            true
        };
        if is_table {
            let snapshot = self.materialized.refresh(&topics, &src)?;
            match lookup_keys(&src, filter_expr.as_ref()) {
                Some(keys) => {
                    let partitions = topics.partitions(&src.topic).unwrap_or(0);
                    snapshot.lookup(partitions, &keys, |c| answer(c, &mut rows))?
                }
                None => snapshot.scan(|c| answer(c, &mut rows))?,
            }
        } else {
            let partitions = topics.partitions(&src.topic).unwrap_or(0);
            'stream: for p in 0..partitions {
                let end = topics.end_offset(&src.topic, p)?;
                let mut at = 0;
                while at < end {
                    let batch = topics.read(&src.topic, p, at, crate::limits::POLL_BATCH)?;
                    let Some(last) = batch.last() else { break };
                    at = last.offset + 1;
                    for c in batch.iter().filter(|c| c.offset < end) {
                        if !answer(c, &mut rows) {
                            break 'stream;
                        }
                    }
                }
            }
        }
        let limited = limit.is_some_and(|l| rows.len() >= l);
        let final_message = match (is_table, limited) {
            (false, true) => Some("Limit Reached".to_string()),
            (false, false) => Some("Query Completed".to_string()),
            (true, _) => None,
        };
        Ok(PullResult { columns, rows, final_message })
    }

    /// Plans a push query (`SELECT ... EMIT CHANGES`). It reads its inputs from the beginning
    /// unless the caller seeks it to the end.
    pub fn push_query(&mut self, select: &Select, id: &str) -> Result<PushQuery> {
        self.transient.set(true);
        let planned = self.plan(select, "TRANSIENT", &BTreeMap::new(), None);
        self.transient.set(false);
        let planned = planned?;
        let kind = planned.kind;
        let columns = planned
            .output
            .values
            .iter()
            .map(|f| Column { name: f.name.clone(), ty: f.ty.clone(), key: false })
            .collect();
        let partitions = self.topics().partitions(&planned.input.topic).unwrap_or(1);
        let mut query =
            Query::new(id.to_string(), String::new(), planned.input, planned.output, planned.plan, partitions);
        query.set_rights(planned.rights);
        query.collected = Some(vec![]);
        Ok(PushQuery { columns, query, limit: select.limit, sent: 0, table: kind == SourceKind::Table })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::MemTopics;

    fn source(sql: &str) -> SourceDef {
        let mut engine = Engine::new(Arc::new(MemTopics::new()));
        engine.auto_create_topics = true;
        engine.execute(sql).expect("create table");
        engine.catalog.sources.get("T").expect("T").clone()
    }

    fn filter(sql: &str) -> Expr {
        crate::parser::parse_expression(sql).expect("parses")
    }

    #[test]
    fn pull_queries_seek_canonical_single_column_keys() {
        let string = source(
            "CREATE TABLE T (K STRING PRIMARY KEY, V INT) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
        );
        let keys = |src: &SourceDef, w: &str| lookup_keys(src, Some(&filter(w)));
        assert_eq!(keys(&string, "K = 'b'"), Some(vec![b"b".to_vec()]));
        assert_eq!(keys(&string, "V > 1 AND 'b' = K"), Some(vec![b"b".to_vec()]));
        assert_eq!(keys(&string, "K IN ('c', 'a', 'c')"), Some(vec![b"a".to_vec(), b"c".to_vec()]));
        assert_eq!(keys(&string, "K = 'a' OR K = 'b'"), None, "a disjunction scans");
        assert_eq!(keys(&string, "K > 'a'"), None);
        assert_eq!(keys(&string, "V = 1"), None);
        assert_eq!(keys(&string, "K = NULL"), Some(vec![]), "matches nothing");

        let big = source(
            "CREATE TABLE T (K BIGINT PRIMARY KEY, V INT) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
        );
        assert_eq!(keys(&big, "K = 5"), Some(vec![5i64.to_be_bytes().to_vec()]), "an INT literal as BIGINT");
        assert_eq!(keys(&big, "K = 5.0"), None, "a decimal literal: scan");

        let json = source("CREATE TABLE T (K STRING PRIMARY KEY, V INT) WITH (kafka_topic='t', key_format='JSON', value_format='JSON', partitions=1);");
        assert_eq!(keys(&json, "K = 'b'"), None, "JSON keys have many byte forms");
        let double = source(
            "CREATE TABLE T (K DOUBLE PRIMARY KEY, V INT) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
        );
        assert_eq!(keys(&double, "K = 1.5"), None, "0.0 and -0.0 are equal with different bytes");
    }
}
