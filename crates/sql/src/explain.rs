//! `EXPLAIN`: a persistent query's plan, or a statement's (SELECT, CREATE ... AS SELECT,
//! INSERT INTO ... SELECT) planned without running it, as text.
//!
//! The topology lists the planner's operators in processing order (source, joins, filter,
//! table functions, aggregation, HAVING, projection, sink); the execution plan shows the same
//! steps the way ksqlDB prints its logical plan, sink first, each step indented under its
//! consumer. The expressions are the statement's, as written (canonical text).

use std::collections::BTreeMap;

use crate::ast::*;
use crate::catalog::SourceDef;
use crate::engine::Engine;
use crate::error::{Result, SqlError};
use crate::functions;
use crate::join::JoinShape;
use crate::parser;
use crate::query::{AggregatePlan, Plan, Query};

/// A planned query, described.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The kind of the result (a stream or a table).
    pub kind: SourceKind,
    /// The statement's input sources, the FROM source first.
    pub sources: Vec<String>,
    /// The sink (persistent queries); `None` for a SELECT.
    pub sink: Option<SourceDef>,
    /// The result's schema (the sink's, or the SELECT's columns as values).
    pub output: SourceDef,
    pub topology: String,
    pub execution_plan: String,
}

impl Engine {
    /// Plans `stmt` without running it.
    pub fn explain_statement(&self, stmt: &Statement) -> Result<Explanation> {
        let (select, sink_name, props, existing) = match stmt {
            Statement::Select(s) => (s.as_ref(), None, BTreeMap::new(), None),
            Statement::CreateAs(c) => (c.query.as_ref(), Some(c.name.clone()), c.properties.clone(), None),
            Statement::InsertInto { target, query, .. } => {
                let sink = self.catalog.get(target).cloned().ok_or_else(|| {
                    SqlError::statement(format!("{target} does not exist."))
                })?;
                (query.as_ref(), Some(target.clone()), BTreeMap::new(), Some(sink))
            }
            _ => {
                return Err(SqlError::statement(
                    "EXPLAIN explains a query id, or a SELECT, CREATE STREAM/TABLE AS SELECT or INSERT INTO ... SELECT statement.",
                ))
            }
        };
        let planned = match &sink_name {
            None => {
                self.transient.set(true);
                let planned = self.plan(select, "TRANSIENT", &props, None);
                self.transient.set(false);
                planned?
            }
            Some(name) => self.plan(select, name, &props, existing.as_ref())?,
        };
        if let Statement::CreateAs(c) = stmt {
            if planned.kind != c.kind {
                return Err(SqlError::statement(format!(
                    "Invalid result type. Your SELECT query produces a {}. Please use CREATE {} AS SELECT statement instead.",
                    planned.kind.name(),
                    planned.kind.name()
                )));
            }
        }
        let sink = sink_name.map(|_| existing.unwrap_or_else(|| planned.output.clone()));
        Ok(describe(select, planned.kind, &planned.plan, &planned.input, &planned.rights, &planned.output, sink))
    }
}

/// Describes a running (or failed) persistent query, from its statement and its plan.
pub fn explain_query(q: &Query) -> Result<Explanation> {
    let stmt = parser::parse_statement(&q.sql, &Default::default())
        .map_err(|e| SqlError::statement(format!("The query's statement no longer parses: {e}")))?;
    let select = match &stmt {
        Statement::CreateAs(c) => c.query.as_ref(),
        Statement::InsertInto { query, .. } => query.as_ref(),
        _ => return Err(SqlError::statement("The query's statement is not a query.")),
    };
    Ok(describe(select, q.output.kind, &q.plan, &q.input, &q.rights, &q.output, Some(q.output.clone())))
}

fn source_line(s: &SourceDef) -> String {
    format!(
        "{} {} (topic: {}, key format: {}, value format: {})",
        s.kind.name(),
        s.name,
        s.topic,
        s.key_serde.format.name(),
        s.value_serde.format.name()
    )
}

fn window_text(w: &WindowSpec) -> String {
    let mut t = match w.kind {
        WindowKind::Tumbling { size } => format!("TUMBLING (SIZE {size} MILLISECONDS"),
        WindowKind::Hopping { size, advance } => {
            format!("HOPPING (SIZE {size} MILLISECONDS, ADVANCE BY {advance} MILLISECONDS")
        }
        WindowKind::Session { gap } => format!("SESSION ({gap} MILLISECONDS"),
    };
    if let Some(r) = w.retention {
        t.push_str(&format!(", RETENTION {r} MILLISECONDS"));
    }
    if let Some(g) = w.grace {
        t.push_str(&format!(", GRACE PERIOD {g} MILLISECONDS"));
    }
    t.push(')');
    t
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// The aggregate calls of the SELECT list and HAVING, once each, in order.
fn aggregate_calls(select: &Select) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut visit = |e: &Expr| {
        e.walk(&mut |e| {
            if let Expr::Function { name, .. } = e {
                let text = e.to_string();
                if functions::is_aggregate(name) && !out.contains(&text) {
                    out.push(text);
                }
            }
        })
    };
    for item in &select.items {
        if let SelectItem::Expr { expr, .. } = item {
            visit(expr);
        }
    }
    if let Some(h) = &select.having {
        visit(h);
    }
    out
}

fn table_function_calls(select: &Select) -> Vec<String> {
    let mut out = vec![];
    for item in &select.items {
        if let SelectItem::Expr { expr, .. } = item {
            expr.walk(&mut |e| {
                if let Expr::Function { name, .. } = e {
                    if functions::is_table_function(name) {
                        out.push(e.to_string());
                    }
                }
            });
        }
    }
    out
}

/// One step of the plan: ksqlDB's name for it and its detail.
struct Step {
    name: &'static str,
    detail: String,
}

fn describe(
    select: &Select,
    kind: SourceKind,
    plan: &Plan,
    input: &SourceDef,
    rights: &[SourceDef],
    output: &SourceDef,
    sink: Option<SourceDef>,
) -> Explanation {
    let mut steps =
        vec![Step { name: "SOURCE", detail: format!("{} | Schema: {}", source_line(input), input.schema_string()) }];
    let filter = select.filter.as_ref().map(|f| f.to_string());
    match plan {
        Plan::Join(stages, aggregated) => {
            for (i, stage) in stages.iter().enumerate() {
                let right = rights.get(i);
                let ast = select.joins.get(i);
                let shape = match stage.shape {
                    JoinShape::StreamStream { .. } => "stream-stream",
                    JoinShape::StreamTable => "stream-table",
                    JoinShape::TableTable => "table-table",
                    JoinShape::ForeignKey => "table-table foreign-key",
                };
                let mut detail = format!(
                    "{:?} {shape} join with {}",
                    stage.kind,
                    right.map(source_line).unwrap_or_else(|| "?".into())
                )
                .to_ascii_uppercase();
                if let Some(j) = ast {
                    detail.push_str(&format!(" ON {}", j.on));
                    if let JoinShape::StreamStream { before, after, grace } = stage.shape {
                        detail.push_str(&format!(" WITHIN ({before} MILLISECONDS, {after} MILLISECONDS)"));
                        if let Some(g) = grace {
                            detail.push_str(&format!(" GRACE PERIOD {g} MILLISECONDS"));
                        }
                    }
                }
                steps.push(Step { name: "JOIN", detail });
            }
            if let Some(f) = &filter {
                steps.push(Step { name: "FILTER", detail: f.clone() });
            }
            if let Some(a) = aggregated {
                aggregate_steps(select, a, None, &mut steps);
            }
        }
        Plan::Project { filter: f, table_functions, .. } => {
            if let (Some(_), Some(text)) = (f, &filter) {
                steps.push(Step { name: "FILTER", detail: text.clone() });
            }
            if !table_functions.is_empty() {
                steps.push(Step { name: "FLAT_MAP", detail: list(table_function_calls(select)) });
            }
        }
        Plan::Aggregate(a) => aggregate_steps(select, a, filter.as_ref(), &mut steps),
    }
    steps.push(Step { name: "PROJECT", detail: format!("Schema: {}", output.schema_string()) });
    match &sink {
        Some(s) => steps.push(Step { name: "SINK", detail: source_line(s) }),
        None => {
            let limit = select.limit.map(|l| format!(" (LIMIT {l})")).unwrap_or_default();
            steps.push(Step { name: "TRANSIENT", detail: format!("rows to the client{limit}") })
        }
    }
    let mut topology = String::from("Freshet operators, in processing order:\n");
    for (i, s) in steps.iter().enumerate() {
        let arrow = if i == 0 { "  " } else { "  --> " };
        topology.push_str(&format!("{arrow}[ {} ] {}\n", s.name, s.detail));
    }
    let mut execution_plan = String::new();
    for (depth, s) in steps.iter().rev().enumerate() {
        execution_plan.push_str(&format!("{} > [ {} ] | {}\n", "\t\t".repeat(depth), s.name, s.detail));
    }
    let mut sources = vec![input.name.clone()];
    sources.extend(rights.iter().map(|r| r.name.clone()));
    Explanation { kind, sources, sink, output: output.clone(), topology, execution_plan }
}

/// The steps of an aggregation: its WHERE (`filter`, when it applies it), the aggregation
/// itself, HAVING.
fn aggregate_steps(select: &Select, a: &AggregatePlan, filter: Option<&String>, steps: &mut Vec<Step>) {
    if let (Some(_), Some(text)) = (&a.filter, filter) {
        steps.push(Step { name: "FILTER", detail: text.clone() });
    }
    let mut detail = format!("GROUP BY {}", list(select.group_by.iter().map(|e| e.to_string())));
    if let Some(w) = &a.window {
        detail.push_str(&format!(" | WINDOW {}", window_text(w)));
    }
    detail.push_str(&format!(" | Aggregates: {}", list(aggregate_calls(select))));
    detail.push_str(if a.emit_final { " | EMIT FINAL" } else { " | EMIT CHANGES" });
    steps.push(Step { name: "AGGREGATE", detail });
    if let (Some(_), Some(h)) = (&a.having, &select.having) {
        steps.push(Step { name: "HAVING", detail: h.to_string() });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::topics::MemTopics;

    fn engine() -> Engine {
        let mut e = Engine::new(Arc::new(MemTopics::new()));
        e.auto_create_topics = true;
        e.execute(
            "CREATE STREAM ORDERS (K STRING KEY, AMOUNT DOUBLE, CUSTOMER STRING, TAGS ARRAY<STRING>) WITH (kafka_topic='orders', value_format='JSON');",
        )
        .unwrap();
        e
    }

    fn explain(e: &Engine, sql: &str) -> Explanation {
        let stmt = parser::parse_statement(sql, &Default::default()).unwrap();
        let Statement::Explain(ExplainTarget::Statement(inner)) = stmt else { panic!("{stmt:?}") };
        e.explain_statement(&inner).unwrap()
    }

    #[test]
    fn explains_an_aggregation() {
        let e = engine();
        let x = explain(
            &e,
            "EXPLAIN CREATE TABLE TOTALS AS SELECT CUSTOMER, COUNT(*) AS N, SUM(AMOUNT) FROM ORDERS WINDOW TUMBLING (SIZE 1 MINUTE) WHERE AMOUNT > 1 GROUP BY CUSTOMER HAVING COUNT(*) > 2 EMIT CHANGES;",
        );
        assert_eq!(x.kind, SourceKind::Table);
        assert_eq!(x.sources, ["ORDERS"]);
        assert_eq!(x.sink.as_ref().unwrap().name, "TOTALS");
        let t = &x.topology;
        let order = [
            "[ SOURCE ] STREAM ORDERS",
            "[ FILTER ] (AMOUNT > 1)",
            "[ AGGREGATE ] GROUP BY CUSTOMER",
            "[ HAVING ]",
            "[ PROJECT ]",
            "[ SINK ] TABLE TOTALS",
        ];
        let mut at = 0;
        for o in order {
            let found = t[at..].find(o).unwrap_or_else(|| panic!("{o} not after {at} in\n{t}"));
            at += found;
        }
        assert!(t.contains("COUNT(*), SUM(AMOUNT)"), "{t}");
        assert!(t.contains("TUMBLING (SIZE 60000 MILLISECONDS)"), "{t}");
        assert!(x.execution_plan.starts_with(" > [ SINK ]"), "{}", x.execution_plan);
        // Nothing ran: no query, no sink.
        assert!(e.queries.is_empty());
        assert!(e.catalog.get("TOTALS").is_none());
    }

    #[test]
    fn explains_a_select_with_a_table_function() {
        let e = engine();
        let x = explain(&e, "EXPLAIN SELECT K, EXPLODE(TAGS) AS TAG FROM ORDERS EMIT CHANGES LIMIT 3;");
        assert!(x.sink.is_none());
        assert!(x.topology.contains("[ FLAT_MAP ] EXPLODE(TAGS)"), "{}", x.topology);
        assert!(x.topology.contains("[ TRANSIENT ] rows to the client (LIMIT 3)"), "{}", x.topology);
    }

    #[test]
    fn explains_a_running_query() {
        let mut e = engine();
        e.execute("CREATE STREAM BIG AS SELECT * FROM ORDERS WHERE AMOUNT > 100;").unwrap();
        let q = e.queries.values().next().unwrap();
        let x = explain_query(q).unwrap();
        assert_eq!(x.sources, ["ORDERS"]);
        assert!(x.topology.contains("[ FILTER ] (AMOUNT > 100)"), "{}", x.topology);
        assert!(x.topology.contains("[ SINK ] STREAM BIG (topic: BIG"), "{}", x.topology);
    }

    #[test]
    fn refuses_other_statements() {
        let e = engine();
        let stmt = parser::parse_statement("SHOW STREAMS;", &Default::default()).unwrap();
        assert!(e.explain_statement(&stmt).is_err());
        let missing = parser::parse_statement("SELECT * FROM NOPE EMIT CHANGES;", &Default::default()).unwrap();
        assert!(e.explain_statement(&missing).unwrap_err().to_string().contains("NOPE"));
    }
}
