//! `POST /query` and `POST /query-stream` on the engine's side: a SELECT becomes a pull query
//! (answered at once from the table's materialized state or the stream's records) or a push
//! query (`EMIT CHANGES`), which the engine thread steps with the persistent queries and whose
//! rows go to the HTTP handler through a bounded channel.
//!
//! Architecture invariant: a slow or vanished client never stalls the engine. A push query
//! whose channel is full is not stepped (its input waits in the log, not in memory); one whose
//! client went away (receiver dropped) is dropped at the next step.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use freshet_common::limits::{SQL_MAX_PUSH_QUERIES, SQL_PUSH_CHANNEL_ROWS};
use freshet_sql::ast::Statement;
use freshet_sql::format::to_json;
use freshet_sql::parser;
use freshet_sql::topics::Topics;
use freshet_sql::transient::{schema_string, Column, PushQuery};
use freshet_sql::value::Value;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use super::ksql::{bad_statement, json_string, reads_from_earliest, substitute, KsqlRequest, Reply, SqlServer};
use super::print::PrintCursor;

/// One element of a query's answer, in the shapes of both endpoints.
#[derive(Debug)]
pub enum Item {
    /// A row; `true` for a table's tombstone.
    Row(Vec<Json>, bool),
    /// A line of a PRINT.
    Line(String),
    /// The query ended: LIMIT reached (`finalMessage`) or an error.
    End { message: String, error: bool },
}

/// What `/query` gets back from the engine.
pub enum Answer {
    Error(Reply),
    Pull {
        query_id: String,
        columns: Vec<Column>,
        rows: Vec<Vec<Json>>,
        final_message: Option<String>,
    },
    Push {
        query_id: String,
        columns: Vec<Column>,
        rows: mpsc::Receiver<Item>,
    },
    /// A PRINT: lines of text.
    Print {
        lines: mpsc::Receiver<Item>,
    },
}

/// What a push slot runs.
enum Source {
    Select(Box<PushQuery>),
    Print(PrintCursor),
}

/// A push query and the channel to its client.
pub struct PushSlot {
    id: String,
    source: Source,
    tx: mpsc::Sender<Item>,
    /// Rows produced but not yet taken by the client's channel.
    backlog: VecDeque<Item>,
    ended: bool,
}

fn row_json(values: Vec<Value>) -> Vec<Json> {
    values.iter().map(to_json).collect()
}

impl SqlServer {
    /// Runs a SELECT from `/query` or `/query-stream`.
    pub fn query(&mut self, req: KsqlRequest) -> Answer {
        let vars: BTreeMap<String, String> =
            req.session_variables.iter().map(|(k, v)| (k.clone(), json_string(v))).collect();
        let props: BTreeMap<String, String> =
            req.streams_properties.iter().map(|(k, v)| (k.clone(), json_string(v))).collect();
        let statements = parser::split_statements(&req.ksql);
        let [raw] = statements.as_slice() else {
            return Answer::Error(bad_statement("Expected exactly one statement: a SELECT.", &req.ksql));
        };
        let text = substitute(raw, &vars);
        let types = self.engine.catalog.types.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let select = match parser::parse_statement(&text, &types) {
            Ok(Statement::Select(s)) => s,
            Ok(Statement::Print { topic, from_beginning, interval, limit }) => {
                return self.print(&text, &topic, from_beginning, interval, limit)
            }
            Ok(_) => {
                return Answer::Error(bad_statement(
                    "The /query endpoint only runs SELECT and PRINT statements; send other statements to /ksql.",
                    &text,
                ))
            }
            Err(e) => return Answer::Error(super::ksql::statement_error(&e, &text)),
        };
        self.query_seq += 1;
        let engine = &mut self.engine;
        if select.emit.is_none() {
            let query_id = format!("query_{}", self.query_seq);
            return match std::panic::catch_unwind(AssertUnwindSafe(|| engine.pull_query(&select, &props))) {
                Ok(Ok(r)) => Answer::Pull {
                    query_id,
                    columns: r.columns,
                    rows: r.rows.into_iter().map(row_json).collect(),
                    final_message: r.final_message,
                },
                Ok(Err(e)) => Answer::Error(bad_statement(&e.to_string(), &text)),
                Err(_) => Answer::Error(bad_statement("The pull query failed (internal error).", &text)),
            };
        }
        if self.push.len() >= SQL_MAX_PUSH_QUERIES {
            return Answer::Error(bad_statement(
                &format!("Too many push queries are running ({SQL_MAX_PUSH_QUERIES}); close one and retry."),
                &text,
            ));
        }
        let query_id = format!("transient_{}_{}", select.from.name, self.query_seq);
        let mut query = match std::panic::catch_unwind(AssertUnwindSafe(|| engine.push_query(&select, &query_id))) {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => return Answer::Error(bad_statement(&e.to_string(), &text)),
            Err(_) => return Answer::Error(bad_statement("The push query failed to start (internal error).", &text)),
        };
        if !reads_from_earliest(&props) {
            query.seek_to_end(self.engine.topics());
        }
        let (tx, rx) = mpsc::channel(SQL_PUSH_CHANNEL_ROWS);
        let columns = query.columns.clone();
        self.push.push(PushSlot {
            id: query_id.clone(),
            source: Source::Select(Box::new(query)),
            tx,
            backlog: VecDeque::new(),
            ended: false,
        });
        Answer::Push { query_id, columns, rows: rx }
    }

    /// Starts a PRINT: its lines go to the client through a push slot.
    fn print(
        &mut self,
        text: &str,
        topic: &str,
        from_beginning: bool,
        interval: Option<u64>,
        limit: Option<u64>,
    ) -> Answer {
        if self.push.len() >= SQL_MAX_PUSH_QUERIES {
            return Answer::Error(bad_statement(
                &format!("Too many push queries are running ({SQL_MAX_PUSH_QUERIES}); close one and retry."),
                text,
            ));
        }
        // As written; an unquoted name that matches no topic matches one in another case.
        let name = match self.topics.partitions(topic) {
            Some(_) => Some(topic.to_string()),
            None => self.topics.list_topics().into_iter().find(|t| t.eq_ignore_ascii_case(topic)),
        };
        let Some((name, partitions)) = name.and_then(|n| self.topics.partitions(&n).map(|p| (n, p))) else {
            return Answer::Error(bad_statement(
                &format!(
                    "Could not find topic '{topic}', or the KSQL user does not have permissions to list the topic. Topic names are case-sensitive."
                ),
                text,
            ));
        };
        let topics = self.topics.clone() as Arc<dyn Topics>;
        let cursor = match PrintCursor::new(&topics, &name, partitions, from_beginning, interval, limit) {
            Ok(c) => c,
            Err(e) => return Answer::Error(bad_statement(&format!("Could not read topic '{name}': {e}"), text)),
        };
        self.query_seq += 1;
        let (tx, rx) = mpsc::channel(SQL_PUSH_CHANNEL_ROWS);
        self.push.push(PushSlot {
            id: format!("print_{name}_{}", self.query_seq),
            source: Source::Print(cursor),
            tx,
            backlog: VecDeque::new(),
            ended: false,
        });
        Answer::Print { lines: rx }
    }

    /// Steps the push queries; returns the rows they produced.
    pub fn step_push(&mut self) -> usize {
        let topics = self.topics.clone() as Arc<dyn Topics>;
        let mut produced = 0;
        let mut errors = vec![];
        for slot in &mut self.push {
            if slot.tx.is_closed() {
                slot.ended = true;
                continue;
            }
            // Hand over what is waiting first; step only when the channel has room.
            deliver(slot);
            if slot.ended || !slot.backlog.is_empty() {
                continue;
            }
            let polled = match &mut slot.source {
                Source::Select(query) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                    query.poll(&topics, &mut errors).map(|rows| {
                        let items: Vec<Item> =
                            rows.into_iter().map(|(r, tombstone)| Item::Row(row_json(r), tombstone)).collect();
                        (items, query.finished())
                    })
                })),
                Source::Print(cursor) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                    cursor
                        .poll(&topics)
                        .map(|lines| (lines.into_iter().map(Item::Line).collect(), cursor.finished()))
                        .map_err(|e| freshet_sql::SqlError::statement(e.to_string()))
                })),
            };
            match polled {
                Ok(Ok((items, finished))) => {
                    produced += items.len();
                    slot.backlog.extend(items);
                    if finished {
                        slot.backlog.push_back(Item::End { message: "Limit Reached".into(), error: false });
                    }
                }
                Ok(Err(e)) => {
                    slot.backlog.push_back(Item::End { message: e.to_string(), error: true });
                }
                Err(_) => {
                    tracing::error!(query = %slot.id, "a push query panicked; ending it");
                    slot.backlog
                        .push_back(Item::End { message: "The query failed (internal error).".into(), error: true });
                }
            }
            deliver(slot);
        }
        for e in errors {
            tracing::warn!(query = %e.query, topic = %e.topic, partition = e.partition, offset = e.offset, error = %e.message, "SQL processing error in a push query");
        }
        self.push.retain(|s| !s.ended);
        produced
    }
}

/// Moves a push query's backlog into its channel as far as it has room; the query ends once
/// its end item is delivered or its client is gone.
fn deliver(slot: &mut PushSlot) {
    while let Some(item) = slot.backlog.pop_front() {
        let last = matches!(item, Item::End { .. });
        match slot.tx.try_send(item) {
            Ok(()) if last => {
                slot.ended = true;
                return;
            }
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                slot.backlog.push_front(item);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                slot.ended = true;
                return;
            }
        }
    }
}

/// The `/query` header element.
pub fn header_json(query_id: &str, columns: &[Column]) -> Json {
    json!({ "header": { "queryId": query_id, "schema": schema_string(columns) } })
}

/// The `/query-stream` metadata element.
pub fn metadata_json(query_id: &str, columns: &[Column]) -> Json {
    json!({
        "queryId": query_id,
        "columnNames": columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "columnTypes": columns.iter().map(|c| c.ty.to_string()).collect::<Vec<_>>(),
    })
}
