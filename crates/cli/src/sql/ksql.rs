//! The SQL server: the engine, the command topic that makes its statements survive restarts,
//! and the `/ksql` endpoint's statement handling with ksqlDB's JSON shapes.
//!
//! Everything here runs on the engine's thread (see `runner.rs`); the HTTP handlers only pass
//! requests in and answers out.
//!
//! Persistence: every successful statement that changes the metastore or the set of persistent
//! queries (CREATE [AS SELECT], INSERT INTO ... SELECT, DROP, TERMINATE, CREATE/DROP TYPE) is
//! appended, with variables substituted, to the command topic `_freshet_sql_commands` before it
//! is acknowledged, with the input offsets its query starts from. At startup the topic is
//! replayed in order before the HTTP listener opens.
//!
//! Each step of a persistent query writes, in one transaction: its output records, its state
//! changes (to its changelog topic, `_freshet_sql_<query id>-changelog`) and its progress (the
//! input offsets it reached, to `_freshet_sql_progress`). Only after that commit are the state
//! changes applied to the query's store file in the state directory. After a restart each query
//! restores its state from the file and the changelog's tail, and resumes at its progress: no
//! input is read twice and no output written twice. Without a state directory (`freshet
//! sql-test`) a query's state is only in memory: a restart re-reads its input from its start
//! offsets and suppresses outputs up to its progress.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet_common::config::TopicConfig;
use freshet_common::limits::{
    SQL_COMMAND_POLL_MS, SQL_COMMIT_INTERVAL_MS, SQL_COMMIT_MAX_RECORDS, SQL_QUERY_RETRY_MAX_MS, SQL_QUERY_RETRY_MS,
    SQL_REPARTITION_PURGE_MS,
};
use freshet_sql::ast::{ExplainTarget, SourceKind, Statement, WindowKind};
use freshet_sql::catalog::SourceDef;
use freshet_sql::engine::{Engine, Outcome};
use freshet_sql::error::ErrorKind;
use freshet_sql::explain;
use freshet_sql::functions::registry;
use freshet_sql::parser;
use freshet_sql::query::{changelog_topic, is_repartition_topic, repartition_changelog_topic};
use freshet_sql::state::{Restored, StateStore};
use freshet_sql::topics::{Record, Topics};
use freshet_sql::types::SqlType;
use freshet_sql::SqlError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::placement::{Placement, Task};
use super::SqlTopics;

/// The topic holding every persisted statement, in order (ksqlDB's command topic).
pub const COMMAND_TOPIC: &str = "_freshet_sql_commands";

/// The topic holding each persistent query's progress (compacted; key: the query id, value:
/// the input offsets up to which its outputs are written).
pub const PROGRESS_TOPIC: &str = "_freshet_sql_progress";

/// The processing log: one JSON record per input record a query could not process (ksqlDB's
/// `<service id>ksql_processing_log`).
pub const PROCESSING_LOG_TOPIC: &str = "default_ksql_processing_log";

/// The service id reported by `/info` and `/healthcheck` (ksqlDB's `ksql.service.id` default).
pub const SERVICE_ID: &str = "default_";

/// The ksqlDB version whose REST API this one follows.
pub const KSQL_COMPAT_VERSION: &str = "0.29.0";

/// ksqlDB's error codes.
const ERROR_BAD_REQUEST: u32 = 40000;
const ERROR_BAD_STATEMENT: u32 = 40001;
const ERROR_SERVER: u32 = 50000;

/// A `/ksql` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KsqlRequest {
    pub ksql: String,
    #[serde(default, rename = "streamsProperties", alias = "properties")]
    pub streams_properties: BTreeMap<String, Json>,
    #[serde(default, rename = "sessionVariables")]
    pub session_variables: BTreeMap<String, Json>,
}

/// An HTTP status and a JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Json,
}

/// A persisted statement: one record of the command topic (key: the command id).
#[derive(Debug, Serialize, Deserialize)]
struct Command {
    version: u32,
    statement: String,
    /// The input offsets the statement's persistent query started from, if it started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offsets: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    right_offsets: Option<Vec<Vec<i64>>>,
    /// `processing.guarantee=at_least_once` was asked for the query (exactly-once otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    at_least_once: bool,
    /// The query's state is split over tasks, one per partition (decided once, by the server
    /// that ran the statement; see `SqlServer::decide_split`). Absent: one task owns it all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    split: bool,
}

pub struct SqlServer {
    pub engine: Engine,
    pub(super) topics: Arc<dyn SqlTopics>,
    /// Running push queries (`/query` with EMIT CHANGES).
    pub(super) push: Vec<super::query::PushSlot>,
    pub(super) query_seq: u64,
    /// The progress last recorded per query.
    pub(super) progress: BTreeMap<String, Vec<Vec<i64>>>,
    /// Queries stopped by a failure, with the reason (shown as ERROR until they run again).
    pub(super) failed: BTreeMap<String, (freshet_sql::query::Query, String)>,
    /// When each failed query is started again, and the wait after its next failure in a row.
    pub(super) retries: BTreeMap<String, (Instant, Duration)>,
    /// Queries created with `processing.guarantee=at_least_once`: outputs, then progress, no
    /// transaction.
    pub(super) at_least_once: BTreeSet<String>,
    /// Queries whose state is split over tasks, one per partition (see `placement.rs`).
    pub(super) split: BTreeSet<String>,
    /// Where the queries' state store files live (`None`: state in memory only).
    pub(super) state_dir: Option<PathBuf>,
    /// This server's membership in the group that splits queries over the SQL servers of a
    /// cluster (`None`: it runs every query).
    pub(super) placement: Option<Placement>,
    /// The tasks this server steps (see `placement.rs`).
    pub(super) running: BTreeSet<Task>,
    /// The running tasks of split aggregations, each with its own copy of its query and state
    /// (the other tasks step the query in `engine.queries`).
    pub(super) instances: BTreeMap<Task, freshet_sql::query::Query>,
    /// The next command-topic offset to apply, and when the topic was last read.
    commands_at: i64,
    commands_read: Instant,
    /// Commands this server appended and applied before the commands of other servers that
    /// precede them in the topic (written concurrently): skipped when the tail reaches them.
    applied_ahead: BTreeSet<i64>,
    /// The next progress-topic offset to read.
    progress_at: i64,
    /// When the repartition topics were last purged of what was committed past.
    pub(super) purged: Instant,
    /// The startup replay is over: commands applied now come from other servers.
    live: bool,
}

pub(super) fn json_string(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut s = text.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("${{{k}}}"), v);
    }
    s
}

/// Statements that change the metastore or the running queries: persisted and replayed.
fn is_persistent(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::CreateSource(_)
            | Statement::CreateAs(_)
            | Statement::InsertInto { .. }
            | Statement::Drop { .. }
            | Statement::Alter { .. }
            | Statement::Terminate(_)
            | Statement::CreateType { .. }
            | Statement::DropType { .. }
    )
}

fn kind_noun(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "stream",
        SourceKind::Table => "table",
    }
}

/// ksqlDB's command id of a statement (`stream/`NAME`/create`...).
fn command_id(stmt: &Statement) -> String {
    match stmt {
        Statement::CreateSource(c) => format!("{}/`{}`/create", kind_noun(c.kind), c.name),
        Statement::CreateAs(c) => format!("{}/`{}`/create", kind_noun(c.kind), c.name),
        Statement::InsertInto { target, .. } => format!("stream/`{target}`/create"),
        Statement::Drop { kind, name, .. } => format!("{}/`{name}`/drop", kind_noun(*kind)),
        Statement::Alter { kind, name, .. } => format!("{}/`{name}`/alter", kind_noun(*kind)),
        Statement::Terminate(Some(id)) => format!("terminate/{}/execute", id.to_ascii_uppercase()),
        Statement::Terminate(None) => "terminate/ALL/execute".into(),
        Statement::CreateType { name, .. } => format!("type/`{name}`/create"),
        Statement::DropType { name, .. } => format!("type/`{name}`/drop"),
        _ => "unknown".into(),
    }
}

/// ksqlDB's error entity.
fn error_entity(code: u32, message: &str, statement: &str, entities: Vec<Json>) -> Json {
    json!({
        "@type": "statement_error",
        "error_code": code,
        "message": message,
        "statementText": statement,
        "entities": entities,
    })
}

/// A schema as ksqlDB's REST API describes it.
fn schema_json(t: &SqlType) -> Json {
    let base = match t {
        SqlType::Boolean => "BOOLEAN",
        SqlType::Int => "INTEGER",
        SqlType::BigInt => "BIGINT",
        SqlType::Double => "DOUBLE",
        SqlType::Decimal { .. } => "DECIMAL",
        SqlType::String => "STRING",
        SqlType::Bytes => "BYTES",
        SqlType::Date => "DATE",
        SqlType::Time => "TIME",
        SqlType::Timestamp => "TIMESTAMP",
        SqlType::Array(_) => "ARRAY",
        SqlType::Map(..) => "MAP",
        SqlType::Struct(_) => "STRUCT",
    };
    let mut o = json!({ "type": base, "fields": null, "memberSchema": null });
    match t {
        SqlType::Array(m) | SqlType::Map(_, m) => o["memberSchema"] = schema_json(m),
        SqlType::Struct(fields) => {
            o["fields"] = fields.iter().map(|f| json!({ "name": f.name, "schema": schema_json(&f.ty) })).collect()
        }
        SqlType::Decimal { precision, scale } => o["parameters"] = json!({ "precision": precision, "scale": scale }),
        _ => {}
    }
    o
}

impl SqlServer {
    /// Creates the engine over the broker and replays the command topic. Blocking.
    pub fn open(topics: Arc<dyn SqlTopics>, state_dir: Option<PathBuf>) -> freshet_sql::Result<SqlServer> {
        let mut engine = Engine::new(topics.clone() as Arc<dyn Topics>);
        if let Some(dir) = &state_dir {
            engine.materialized = freshet_sql::materialized::Materialized::on_disk(dir.join("tables"));
        }
        let mut server = SqlServer {
            engine,
            topics,
            push: vec![],
            query_seq: 0,
            progress: BTreeMap::new(),
            failed: BTreeMap::new(),
            retries: BTreeMap::new(),
            at_least_once: BTreeSet::new(),
            split: BTreeSet::new(),
            state_dir,
            placement: None,
            running: BTreeSet::new(),
            instances: BTreeMap::new(),
            commands_at: 0,
            commands_read: Instant::now(),
            applied_ahead: BTreeSet::new(),
            progress_at: 0,
            purged: Instant::now(),
            live: false,
        };
        if server.topics.partitions(COMMAND_TOPIC).is_none() {
            // Kept forever, in order (no compaction: a DROP and a re-CREATE share a key), and
            // fsynced on every write whatever the broker-wide defaults say.
            let config = TopicConfig::from_pairs([
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                ("flush.messages", "1"),
            ])
            .expect("valid command topic config");
            server.topics.create_topic_with(COMMAND_TOPIC, 1, config)?;
        }
        if server.topics.partitions(PROGRESS_TOPIC).is_none() {
            let config = TopicConfig::from_pairs([("cleanup.policy", "compact"), ("flush.messages", "1")])
                .expect("valid progress topic config");
            server.topics.create_topic_with(PROGRESS_TOPIC, 1, config)?;
        }
        if server.topics.partitions(PROCESSING_LOG_TOPIC).is_none() {
            server.topics.create_topic_with(PROCESSING_LOG_TOPIC, 1, TopicConfig::default())?;
        }
        if let Some(dir) = &server.state_dir {
            let placement = Placement::open(&*server.topics, dir)
                .map_err(|e| SqlError::server(format!("cannot join the SQL servers' group: {e}")))?;
            server.placement = Some(placement);
        }
        server.replay()?;
        server.resume()?;
        Ok(server)
    }

    /// Applies what was appended to the command topic since the last read (other servers'
    /// statements, or at startup all of them), in order; returns how many were applied.
    fn follow_commands(&mut self) -> freshet_sql::Result<usize> {
        self.commands_read = Instant::now();
        let mut applied = 0;
        loop {
            let batch = self.topics.read(COMMAND_TOPIC, 0, self.commands_at, 256)?;
            if batch.is_empty() {
                return Ok(applied);
            }
            for c in batch {
                self.commands_at = c.offset + 1;
                if self.applied_ahead.remove(&c.offset) {
                    continue;
                }
                applied += 1;
                self.apply_command(c.offset, c.record.value.as_deref());
            }
        }
    }

    /// Applies one persisted statement (replayed, or written by another server).
    fn apply_command(&mut self, offset: i64, value: Option<&[u8]>) {
        let Some(command) = value.and_then(|v| serde_json::from_slice::<Command>(v).ok()) else {
            tracing::warn!(offset, "skipping an unreadable SQL command");
            return;
        };
        let before: BTreeSet<String> = self.engine.queries.keys().cloned().collect();
        let engine = &mut self.engine;
        match std::panic::catch_unwind(AssertUnwindSafe(|| engine.execute_one(&command.statement))) {
            Ok(Ok(outcome)) => {
                // At startup the state files are those of the queries that exist at the end (the
                // others are removed as orphans); later, a query dropped or replaced by another
                // server's statement loses its state here too, shared state included if it ran
                // here (the server that ran the statement forgets it as well).
                let after: BTreeSet<String> = self.engine.queries.keys().cloned().collect();
                let gone: Vec<String> = if self.live { before.difference(&after).cloned().collect() } else { vec![] };
                for gone in &gone {
                    let shared = self.stop_tasks(gone);
                    self.drop_state(gone, shared);
                }
                if let Outcome::QueryStarted { id, .. } = outcome {
                    if before.contains(&id) {
                        if self.live {
                            let shared = self.stop_tasks(&id);
                            self.drop_state(&id, shared);
                        }
                    } else if let Some(q) = self.engine.queries.get_mut(&id) {
                        if let Some(o) = command.offsets {
                            q.offsets = o;
                        }
                        if let Some(o) = command.right_offsets {
                            q.right_offsets = o;
                        }
                        if command.at_least_once {
                            self.at_least_once.insert(id.clone());
                        }
                    }
                    if command.split {
                        self.split.insert(id);
                    } else {
                        self.split.remove(&id);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(offset, statement = %command.statement, error = %e, "a persisted SQL statement failed");
            }
            Err(_) => {
                tracing::error!(offset, statement = %command.statement, "a persisted SQL statement panicked");
            }
        }
    }

    /// Reads what was appended to the progress topic since the last read.
    pub(super) fn follow_progress(&mut self) -> freshet_sql::Result<()> {
        loop {
            let batch = self.topics.read(PROGRESS_TOPIC, 0, self.progress_at, 256)?;
            let Some(last) = batch.last() else { return Ok(()) };
            self.progress_at = last.offset + 1;
            for c in batch {
                let Some(id) = c.record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match c.record.value.as_deref().and_then(|v| serde_json::from_slice::<Vec<Vec<i64>>>(v).ok()) {
                    Some(p) => self.progress.insert(id, p),
                    None => self.progress.remove(&id),
                };
            }
        }
    }

    /// Stops query `id` after a failure (ERROR in SHOW QUERIES). With a state directory it is
    /// started again after a backoff (`SQL_QUERY_RETRY_MS`, doubling), from its changelog and
    /// its recorded progress: the failed step's transaction was aborted, so nothing is lost or
    /// doubled. Without one (`sql-test`) it stays stopped, its state being only in memory.
    pub(super) fn fail_query(&mut self, id: &str, reason: String) {
        self.stop_tasks(id);
        let Some(q) = self.engine.queries.remove(id) else { return };
        if self.state_dir.is_some() {
            let wait = match self.retries.get(id) {
                Some((_, wait)) => *wait,
                None => Duration::from_millis(SQL_QUERY_RETRY_MS),
            };
            let next = (wait * 2).min(Duration::from_millis(SQL_QUERY_RETRY_MAX_MS));
            self.retries.insert(id.to_string(), (Instant::now() + wait, next));
            tracing::error!(query = %id, error = %reason, retry_in_ms = wait.as_millis() as u64, "persistent query failed; it starts again after a wait");
        } else {
            tracing::error!(query = %id, error = %reason, "persistent query failed; it is stopped until the server restarts");
        }
        self.failed.insert(id.to_string(), (q, reason));
    }

    /// Starts again the failed queries whose wait is over (and that this server is to run).
    fn retry_failed(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(id, (at, _))| *at <= now && self.failed.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            if let Some((mut q, reason)) = self.failed.remove(id) {
                tracing::info!(query = %id, after = %reason, "starting a failed query again");
                if let Err(e) = q.release_state() {
                    tracing::warn!(query = %id, error = %e, "could not sync the failed query's state file");
                }
                self.engine.queries.insert(id.clone(), q);
            }
        }
        if !due.is_empty() {
            // Its tasks that are this server's start (`acquire`); the others run elsewhere.
            self.reconcile();
        }
        self.retries.retain(|id, _| self.failed.contains_key(id) || self.engine.queries.contains_key(id));
    }

    /// Between steps: follows the other servers' statements and the placement group, and
    /// starts failed queries again when their wait is over.
    fn maintain(&mut self) {
        if !self.retries.is_empty() {
            self.retry_failed();
        }
        if self.commands_read.elapsed() >= Duration::from_millis(SQL_COMMAND_POLL_MS) {
            match self.follow_commands() {
                Ok(0) => {}
                Ok(_) => self.reconcile(),
                Err(e) => tracing::warn!(error = %e, "could not read the SQL command topic"),
            }
        }
        self.place();
        if self.purged.elapsed() >= Duration::from_millis(SQL_REPARTITION_PURGE_MS) {
            self.purge_repartition_topics();
        }
    }

    fn replay(&mut self) -> freshet_sql::Result<()> {
        let applied = self.follow_commands()?;
        self.live = true;
        tracing::info!(
            commands = applied,
            streams_and_tables = self.engine.catalog.sources.len(),
            queries = self.engine.queries.len(),
            "replayed the SQL command topic"
        );
        Ok(())
    }

    /// After the replay: the queries this server is to run restore their state (store file +
    /// changelog tail) and resume at the progress they had recorded (see `acquire`). Without a
    /// state directory a query rebuilds its state from its start offsets instead, emitting only
    /// what comes after its progress, so its earlier outputs are not written twice.
    fn resume(&mut self) -> freshet_sql::Result<()> {
        self.follow_progress()?;
        if let Some(dir) = self.state_dir.clone() {
            let ids: Vec<String> = self.engine.queries.keys().cloned().collect();
            remove_orphan_state_files(&dir, &ids);
            let tables: Vec<String> = self.engine.catalog.sources.keys().cloned().collect();
            self.engine.materialized.remove_orphans(&tables);
        }
        // Joins the group (a lone server gets every slot in its first answer).
        self.place();
        self.reconcile();
        Ok(())
    }

    /// Gives query `id` its state store (creating its changelog topic if needed) and restores
    /// it. Nothing to do without a state directory.
    pub(super) fn attach_state(&mut self, id: &str) -> freshet_sql::Result<Restored> {
        let Some(dir) = self.state_dir.clone() else { return Ok(Restored { records: 0, rebuilt: false }) };
        let changelog = changelog_topic(id);
        if self.topics.partitions(&changelog).is_none() {
            let config = TopicConfig::from_pairs([("cleanup.policy", "compact")]).expect("valid changelog config");
            self.topics.create_topic_with(&changelog, 1, config)?;
        }
        let topics: &dyn Topics = &*self.topics;
        match self.engine.queries.get_mut(id) {
            Some(q) => q.open_state(&dir, topics),
            None => Ok(Restored { records: 0, rebuilt: false }),
        }
    }

    /// Forgets the state of a dropped (or replaced) query: its store file, and if `shared`
    /// (done by the server that ran it or the one that ran the statement) its changelog topic
    /// and its recorded progress.
    fn drop_state(&mut self, id: &str, shared: bool) {
        if shared {
            // Progress other servers recorded for the query's tasks is forgotten too.
            if let Err(e) = self.follow_progress() {
                tracing::warn!(query = %id, error = %e, "could not read the queries' progress");
            }
        }
        // The whole query's progress and its tasks' (`<id>#<partition>`).
        let task_prefix = format!("{id}#");
        let keys: Vec<String> =
            self.progress.keys().filter(|k| *k == id || k.starts_with(&task_prefix)).cloned().collect();
        for k in &keys {
            self.progress.remove(k);
        }
        let Some(dir) = self.state_dir.clone() else { return };
        // The query's state file and those of its tasks (`<id>#<partition>`).
        for name in std::iter::once(id.to_string()).chain(state_files_of(&dir, id)) {
            if let Err(e) = StateStore::destroy(&dir, &name) {
                tracing::warn!(query = %id, file = %name, error = %e, "could not remove the query's state file");
            }
        }
        if !shared {
            return;
        }
        // Repartition topics, and the changelogs of the join levels' tasks.
        let join_changelogs = format!("_freshet_sql_{id}-join");
        let internal =
            self.topics.list_topics().into_iter().filter(|t| {
                is_repartition_topic(t, id) || (t.starts_with(&join_changelogs) && t.ends_with("-changelog"))
            });
        let changelogs = [changelog_topic(id), repartition_changelog_topic(id)];
        for topic in changelogs.into_iter().chain(internal) {
            if self.topics.partitions(&topic).is_some() {
                if let Err(e) = self.topics.delete_topic(&topic) {
                    tracing::warn!(query = %id, topic = %topic, error = %e, "could not delete the query's internal topic");
                }
            }
        }
        let now = freshet_broker::now_ms();
        let tombstones: Vec<Record> = std::iter::once(id.to_string())
            .chain(keys.into_iter().filter(|k| k != id))
            .map(|k| Record { key: Some(k.into_bytes().into()), value: None, timestamp: now, headers: vec![] })
            .collect();
        if let Err(e) = self.topics.append(PROGRESS_TOPIC, 0, tombstones) {
            tracing::warn!(query = %id, error = %e, "could not forget the query's progress");
        }
    }

    /// At a clean stop: makes every query's state file durable and leaves the placement
    /// group, so that other servers take this one's queries at once.
    pub fn close(&mut self) {
        let tasks = self.instances.iter_mut().map(|(t, q)| (t.name(), q));
        for (name, q) in self.engine.queries.iter_mut().map(|(id, q)| (id.clone(), q)).chain(tasks) {
            if let Err(e) = q.sync_state() {
                tracing::warn!(query = %name, error = %e, "could not sync the query's state file");
            }
        }
        self.leave_placement();
    }

    /// Appends a command; returns its sequence number (offset in the command topic).
    fn persist(&mut self, id: &str, command: &Command) -> freshet_sql::Result<i64> {
        let value = serde_json::to_vec(command).expect("serializable");
        let record = Record {
            key: Some(id.as_bytes().to_vec().into()),
            value: Some(value.into()),
            timestamp: freshet_broker::now_ms(),
            headers: vec![],
        };
        Ok(self.topics.append(COMMAND_TOPIC, 0, vec![record])?)
    }

    /// Runs the persistent queries until none has new input; returns the input records
    /// processed (a record read again from a repartition topic by a split query's owning task
    /// is not counted twice).
    ///
    /// A query whose step fails (a write to its sink failed) or panics is stopped: its state
    /// may hold that step's records while its outputs do not, so running on would lose or
    /// double them. It shows as ERROR in SHOW QUERIES; its statement stays in the command topic
    /// and its recorded progress is before the failed step, so a restart resumes it exactly.
    pub fn step(&mut self) -> usize {
        let mut total = 0;
        loop {
            self.maintain();
            let mut progressed = 0;
            let tasks: Vec<Task> = self.running.iter().cloned().collect();
            for task in tasks {
                let id = task.query.clone();
                let topics = self.engine.topics().clone();
                let upstream = self.upstream_pending(&task);
                let q = match self.instances.get_mut(&task) {
                    Some(q) => q,
                    None => {
                        let Some(q) = self.engine.queries.get_mut(&id) else { continue };
                        // A task of a query split by input partition reads only its partition.
                        q.only_partition = task.partition;
                        q
                    }
                };
                if let Some(upstream) = upstream {
                    q.upstream_pending = upstream;
                }
                // An owning task of a split query reads what its repartition tasks read before.
                let rereads = is_repartition_topic(&q.input.topic, &id);
                let log = &mut self.engine.processing_log;
                let sink = &self.topics;
                let atomic = !self.at_least_once.contains(&id);
                // One step: its outputs and the progress they bring are written as one unit.
                let run = || -> freshet_sql::Result<(usize, Option<Vec<Vec<i64>>>)> {
                    let (mut n, mut outputs) = q.step_collect(&topics, log)?;
                    if n == 0 && outputs.is_empty() {
                        return Ok((0, None));
                    }
                    // More steps into the same transaction while input waits (bounded in
                    // records and time): its cost is per transaction, not per record.
                    let started = Instant::now();
                    let interval = Duration::from_millis(SQL_COMMIT_INTERVAL_MS);
                    while n < SQL_COMMIT_MAX_RECORDS && started.elapsed() < interval {
                        let (more, more_outputs) = q.step_collect(&topics, log)?;
                        if more == 0 && more_outputs.is_empty() {
                            break;
                        }
                        n += more;
                        for (partition, mut records) in more_outputs {
                            outputs.entry(partition).or_default().append(&mut records);
                        }
                    }
                    let positions = match task.partition {
                        Some(p) => q.task_positions(p),
                        None => q.positions(),
                    };
                    let now = freshet_broker::now_ms();
                    let mut writes: Vec<(String, i32, Vec<Record>)> =
                        outputs.into_iter().map(|(p, r)| (q.output.topic.clone(), p, r)).collect();
                    let changes = q.take_changes()?;
                    let changelog = q.changelog.clone();
                    if !changes.is_empty() {
                        let records = StateStore::changelog_records(&changes, now);
                        writes.push((changelog.clone(), q.changelog_partition, records));
                    }
                    let progress = Record {
                        key: Some(task.name().into_bytes().into()),
                        value: Some(serde_json::to_vec(&positions).expect("serializable").into()),
                        timestamp: now,
                        headers: vec![],
                    };
                    writes.push((PROGRESS_TOPIC.to_string(), 0, vec![progress]));
                    if atomic {
                        sink.append_atomic(&task.owner(), writes)?;
                    } else {
                        for (topic, partition, records) in writes {
                            sink.append(&topic, partition, records)?;
                        }
                    }
                    // Committed: the store may now catch up with its changelog.
                    if q.has_state_store() {
                        let next = sink.end_offset(&changelog, q.changelog_partition)?;
                        q.state_committed(&changes, next)?;
                    }
                    Ok((n, Some(positions)))
                };
                let failure = match std::panic::catch_unwind(AssertUnwindSafe(run)) {
                    Ok(Ok((n, positions))) => {
                        progressed += n;
                        if !rereads {
                            total += n;
                        }
                        if let Some(p) = positions {
                            if !self.retries.is_empty() {
                                self.retries.remove(&id);
                            }
                            self.progress.insert(task.name(), p);
                        }
                        continue;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "the query panicked".to_string(),
                };
                self.fail_query(&id, failure);
            }
            if progressed == 0 {
                break;
            }
        }
        self.write_processing_log();
        total
    }

    /// Moves the engine's processing errors to the processing-log topic (and the server log).
    fn write_processing_log(&mut self) {
        let errors: Vec<_> = self.engine.processing_log.drain(..).collect();
        if errors.is_empty() {
            return;
        }
        let now = freshet_broker::now_ms();
        let records = errors
            .iter()
            .map(|e| {
                tracing::warn!(query = %e.query, topic = %e.topic, partition = e.partition, offset = e.offset, error = %e.message, "SQL processing error");
                let value = json!({
                    "level": "ERROR",
                    "logger": format!("processing.{}", e.query),
                    "time": now,
                    "message": {
                        "type": 0,
                        "errorMessage": e.message,
                        "topic": e.topic,
                        "partition": e.partition,
                        "offset": e.offset,
                    },
                });
                Record {
                    key: Some(e.query.as_bytes().to_vec().into()),
                    value: Some(value.to_string().into_bytes().into()),
                    timestamp: now,
                    headers: vec![],
                }
            })
            .collect();
        if let Err(e) = self.topics.append(PROCESSING_LOG_TOPIC, 0, records) {
            tracing::warn!(error = %e, "could not write the SQL processing log");
        }
    }

    /// The `/ksql` endpoint: runs the statements in order; stops at the first error.
    pub fn handle(&mut self, req: KsqlRequest) -> Reply {
        let mut props: BTreeMap<String, String> =
            req.streams_properties.iter().map(|(k, v)| (k.clone(), json_string(v))).collect();
        let mut vars: BTreeMap<String, String> =
            req.session_variables.iter().map(|(k, v)| (k.clone(), json_string(v))).collect();
        let mut entities = vec![];
        for raw in parser::split_statements(&req.ksql) {
            let text = substitute(&raw, &vars);
            let types = self.engine.catalog.types.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let stmt = match parser::parse_statement(&text, &types) {
                Ok(s) => s,
                Err(e) => {
                    let mut reply = statement_error(&e, &text);
                    reply.body["entities"] = Json::Array(entities);
                    return reply;
                }
            };
            let entity = match stmt {
                // Request-scoped, as in ksqlDB's REST API.
                Statement::Set { name, value } => {
                    props.insert(name, value);
                    continue;
                }
                Statement::Unset(name) => {
                    props.remove(&name);
                    continue;
                }
                Statement::Define { name, value } => {
                    vars.insert(name, value);
                    continue;
                }
                Statement::Undefine(name) => {
                    vars.remove(&name);
                    continue;
                }
                Statement::Show(show) => self.show(show, &text, &props, &vars),
                Statement::Describe { name: Some(name), extended, functions: false } => {
                    self.describe(&name, extended, &text)
                }
                Statement::Describe { name: Some(name), functions: true, .. } => self.describe_function(&name, &text),
                Statement::Select(_) | Statement::Print { .. } => Err(Reply {
                    status: 400,
                    body: error_entity(
                        ERROR_BAD_STATEMENT,
                        "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT",
                        &text,
                        vec![],
                    ),
                }),
                Statement::Explain(target) => self.explain(target, &text, &props),
                Statement::Describe { .. } => Err(Reply {
                    status: 400,
                    body: error_entity(ERROR_BAD_STATEMENT, "This statement is not supported yet.", &text, vec![]),
                }),
                stmt => self.execute(stmt, &text, &props),
            };
            match entity {
                Ok(Some(e)) => entities.push(e),
                Ok(None) => {}
                Err(mut reply) => {
                    if let Some(o) = reply.body.as_object_mut() {
                        o.insert("entities".into(), Json::Array(entities));
                    }
                    return reply;
                }
            }
        }
        Reply { status: 200, body: Json::Array(entities) }
    }

    /// Runs a statement the engine executes; persists it when it changes the metastore.
    fn execute(
        &mut self,
        stmt: Statement,
        text: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<Option<Json>, Reply> {
        let persistent = is_persistent(&stmt);
        let command_id = command_id(&stmt);
        if persistent {
            // Other servers' statements first, so that this one sees what they created.
            match self.follow_commands() {
                Ok(0) => {}
                Ok(_) => self.reconcile(),
                Err(e) => return Err(server_error(format!("cannot read the command topic: {e}"))),
            }
        }
        let before: BTreeSet<String> = self.engine.queries.keys().cloned().collect();
        let engine = &mut self.engine;
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| engine.execute_one(text))) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(statement_error(&e, text)),
            Err(_) => {
                tracing::error!(statement = %text, "the SQL engine panicked running a statement");
                return Err(server_error(
                    "The server failed to run the statement (internal error); see the server log.",
                ));
            }
        };
        let (message, query_id) = match &outcome {
            Outcome::Message(m) => (m.clone(), None),
            Outcome::QueryStarted { id, .. } => (format!("Created query with ID {id}"), Some(id.clone())),
            Outcome::Select(_) | Outcome::Listing(_) => (String::new(), None),
        };
        let after: BTreeSet<String> = self.engine.queries.keys().cloned().collect();
        for gone in before.difference(&after) {
            self.stop_tasks(gone);
            self.drop_state(gone, true);
        }
        if let Some(id) = &query_id {
            if before.contains(id) {
                // CREATE OR REPLACE: the new query starts with new state.
                self.stop_tasks(id);
                self.drop_state(id, true);
            } else {
                self.position_new_query(id, props);
            }
            self.decide_split(id);
            // Its tasks that are this server's start here (the others on other servers, once
            // they read the statement from the command topic).
            self.reconcile();
        }
        if !persistent {
            // INSERT VALUES: ksqlDB answers with no entity.
            return Ok(None);
        }
        let (offsets, right_offsets) = match query_id.as_ref().and_then(|id| self.engine.queries.get(id)) {
            Some(q) => (Some(q.offsets.clone()), Some(q.right_offsets.clone())),
            None => (None, None),
        };
        let guarantee = props
            .get("processing.guarantee")
            .or_else(|| props.get("ksql.streams.processing.guarantee"))
            .map(|g| g.to_ascii_lowercase());
        let at_least_once = query_id.is_some() && guarantee.as_deref() == Some("at_least_once");
        if let (true, Some(id)) = (at_least_once, &query_id) {
            self.at_least_once.insert(id.clone());
        }
        let split = query_id.as_ref().is_some_and(|id| self.split.contains(id));
        let command = Command { version: 1, statement: text.to_string(), offsets, right_offsets, at_least_once, split };
        let seq = match self.persist(&command_id, &command) {
            Ok(seq) if seq == self.commands_at => {
                self.commands_at = seq + 1;
                seq
            }
            Ok(seq) => {
                // Another server appended statements between this server's catch-up and its
                // append: they are applied after this one here (the topic has them before).
                tracing::warn!(offset = seq, statement = %text, "statements ran concurrently on several SQL servers");
                self.applied_ahead.insert(seq);
                seq
            }
            Err(e) => {
                tracing::error!(statement = %text, error = %e, "could not persist a SQL statement");
                return Err(server_error(format!(
                    "The statement ran but could not be persisted, so it will not survive a restart: {e}"
                )));
            }
        };
        Ok(Some(json!({
            "@type": "currentStatus",
            "statementText": text,
            "commandId": command_id,
            "commandStatus": { "status": "SUCCESS", "message": message, "queryId": query_id },
            "commandSequenceNumber": seq,
            "warnings": [],
        })))
    }

    /// A new query reads from the end of its inputs unless `auto.offset.reset` is `earliest`
    /// (ksqlDB's default is `latest`).
    fn position_new_query(&mut self, id: &str, props: &BTreeMap<String, String>) {
        if reads_from_earliest(props) {
            return;
        }
        let topics = self.engine.topics().clone();
        if let Some(q) = self.engine.queries.get_mut(id) {
            q.seek_to_end(&topics);
        }
    }

    fn source_summary(s: &SourceDef) -> Json {
        json!({
            "type": s.kind.name(),
            "name": s.name,
            "topic": s.topic,
            "keyFormat": s.key_serde.format.name(),
            "valueFormat": s.value_serde.format.name(),
            "isWindowed": s.window.is_some(),
        })
    }

    fn query_json(&self, q: &freshet_sql::query::Query) -> Json {
        let state = if self.failed.contains_key(&q.id) { "ERROR" } else { "RUNNING" };
        json!({
            "queryString": q.sql,
            "sinks": [q.sink],
            "sinkKafkaTopics": [q.output.topic],
            "id": q.id,
            "statusCount": { state: 1 },
            "queryType": "PERSISTENT",
            "state": state,
        })
    }

    fn show(
        &self,
        show: freshet_sql::ast::Show,
        text: &str,
        props: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> Result<Option<Json>, Reply> {
        use freshet_sql::ast::Show;
        let sources = |kind: SourceKind| -> Vec<Json> {
            self.engine.catalog.sources.values().filter(|s| s.kind == kind).map(Self::source_summary).collect()
        };
        Ok(Some(match show {
            Show::Streams { .. } => {
                json!({ "@type": "streams", "statementText": text, "streams": sources(SourceKind::Stream), "warnings": [] })
            }
            Show::Tables { .. } => {
                json!({ "@type": "tables", "statementText": text, "tables": sources(SourceKind::Table), "warnings": [] })
            }
            Show::Queries { .. } => json!({
                "@type": "queries",
                "statementText": text,
                "queries": self
                    .engine
                    .queries
                    .values()
                    .chain(self.failed.values().map(|(q, _)| q))
                    .map(|q| self.query_json(q))
                    .collect::<Vec<_>>(),
                "warnings": [],
            }),
            Show::Topics { .. } => {
                // As ksqlDB's SHOW TOPICS: internal topics (the broker's, and names starting with
                // '_' such as the command topic) are left out.
                let topics: Vec<Json> = self
                    .topics
                    .visible_topics()
                    .into_iter()
                    .filter(|(name, _)| !name.starts_with('_'))
                    .map(|(name, partitions)| json!({ "name": name, "replicaInfo": vec![1; partitions.max(0) as usize] }))
                    .collect();
                json!({ "@type": "kafka_topics", "statementText": text, "topics": topics, "warnings": [] })
            }
            Show::Properties => json!({
                "@type": "properties",
                "statementText": text,
                "properties": props.iter().map(|(k, v)| json!({ "name": k, "scope": "KSQL", "value": v })).collect::<Vec<_>>(),
                "overwrittenProperties": props.keys().collect::<Vec<_>>(),
                "defaultProperties": [],
                "warnings": [],
            }),
            Show::Variables => json!({
                "@type": "variables",
                "statementText": text,
                "variables": vars.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
                "warnings": [],
            }),
            Show::Types => json!({
                "@type": "type_list",
                "statementText": text,
                "types": self.engine.catalog.types.iter().map(|(k, t)| (k.clone(), schema_json(t))).collect::<serde_json::Map<_, _>>(),
                "warnings": [],
            }),
            Show::Functions => json!({
                "@type": "function_names",
                "statementText": text,
                "functions": registry::all()
                    .iter()
                    .map(|f| json!({ "name": f.name, "category": f.category, "type": f.kind.name() }))
                    .collect::<Vec<_>>(),
                "warnings": [],
            }),
        }))
    }

    /// `EXPLAIN id` or `EXPLAIN statement`: ksqlDB's `queryDescription` entity.
    fn explain(
        &self,
        target: ExplainTarget,
        text: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<Option<Json>, Reply> {
        let (explained, id, statement, state) = match target {
            ExplainTarget::Query(id) => {
                let upper = id.to_ascii_uppercase();
                let (q, state) = match (self.engine.queries.get(&upper), self.failed.get(&upper)) {
                    (Some(q), _) => (q, "RUNNING"),
                    (None, Some((q, _))) => (q, "ERROR"),
                    (None, None) => {
                        return Err(bad_statement(
                            &format!(
                                "Query with id:{id} does not exist, use SHOW QUERIES to view the full set of queries."
                            ),
                            text,
                        ))
                    }
                };
                let explained = explain::explain_query(q).map_err(|e| statement_error(&e, text))?;
                (explained, q.id.clone(), q.sql.clone(), Some(state))
            }
            ExplainTarget::Statement(stmt) => {
                let engine = &self.engine;
                let explained = match std::panic::catch_unwind(AssertUnwindSafe(|| engine.explain_statement(&stmt))) {
                    Ok(r) => r.map_err(|e| statement_error(&e, text))?,
                    Err(_) => return Err(bad_statement("Planning the statement failed (internal error).", text)),
                };
                // The statement as written after EXPLAIN.
                let inner = text.trim_start();
                let inner = inner.get(7..).map(str::trim_start).unwrap_or(inner).to_string();
                (explained, String::new(), inner, None)
            }
        };
        let out = &explained.output;
        let mut fields = vec![];
        for k in &out.keys {
            let ty = if out.kind == SourceKind::Table { "PRIMARY_KEY" } else { "KEY" };
            fields.push(json!({ "name": k.name, "schema": schema_json(&k.ty), "type": ty }));
        }
        for v in &out.values {
            fields.push(json!({ "name": v.name, "schema": schema_json(&v.ty) }));
        }
        let window_type = out.window.map(|w| match w {
            WindowKind::Tumbling { .. } => "TUMBLING",
            WindowKind::Hopping { .. } => "HOPPING",
            WindowKind::Session { .. } => "SESSION",
        });
        let query_type = if explained.sink.is_some() { "PERSISTENT" } else { "PUSH" };
        let errors: Vec<Json> = self
            .failed
            .get(&id)
            .map(|(_, reason)| json!({ "timestamp": 0, "errorMessage": reason, "type": "UNKNOWN" }))
            .into_iter()
            .collect();
        Ok(Some(json!({
            "@type": "queryDescription",
            "statementText": text,
            "queryDescription": {
                "id": id,
                "statementText": statement,
                "windowType": window_type,
                "fields": fields,
                "sources": explained.sources,
                "sinks": explained.sink.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                "sinkKafkaTopics": explained.sink.iter().map(|s| s.topic.clone()).collect::<Vec<_>>(),
                "topology": explained.topology,
                "executionPlan": explained.execution_plan,
                "overriddenProperties": props,
                "ksqlHostQueryStatus": {},
                "queryType": query_type,
                "queryErrors": errors,
                "tasksMetadata": [],
                "state": state,
            },
            "warnings": [],
        })))
    }

    /// `DESCRIBE FUNCTION name`: ksqlDB's `describe_function` entity. The signatures are those
    /// the registry can find (see `freshet_sql::functions::registry`).
    fn describe_function(&self, name: &str, text: &str) -> Result<Option<Json>, Reply> {
        let Some(f) = registry::lookup(name) else {
            return Err(bad_statement(&format!("Can't find any functions with the name '{name}'"), text));
        };
        let mut description = registry::description(f.name)
            .map(str::to_string)
            .unwrap_or_else(|| format!("A built-in {} function.", f.category.to_ascii_lowercase()));
        let (signatures, more) = registry::signatures(&f);
        let variants: Vec<Json> = signatures
            .iter()
            .map(|s| {
                json!({
                    "arguments": s.arguments.iter().enumerate().map(|(i, t)| json!({
                        "name": format!("arg{}", i + 1),
                        "type": t,
                        "description": "",
                        "isVariadic": false,
                    })).collect::<Vec<_>>(),
                    "argumentTypes": s.arguments,
                    "returnType": s.return_type,
                    "description": "",
                })
            })
            .collect();
        if more {
            description.push_str(&format!(
                " (Only the first {} accepted argument combinations are listed.)",
                registry::MAX_SIGNATURES
            ));
        }
        Ok(Some(json!({
            "@type": "describe_function",
            "statementText": text,
            "name": f.name,
            "description": description,
            "author": "Freshet",
            "version": env!("CARGO_PKG_VERSION"),
            "path": "internal",
            "type": f.kind.name(),
            "functions": variants,
            "warnings": [],
        })))
    }

    fn describe(&self, name: &str, extended: bool, text: &str) -> Result<Option<Json>, Reply> {
        let Some(s) = self.engine.catalog.get(name) else {
            return Err(Reply {
                status: 400,
                body: error_entity(
                    ERROR_BAD_STATEMENT,
                    &format!("Could not find STREAM/TABLE '{name}' in the Metastore"),
                    text,
                    vec![],
                ),
            });
        };
        let mut fields = vec![];
        for k in &s.keys {
            let ty = if s.kind == SourceKind::Table { "PRIMARY_KEY" } else { "KEY" };
            fields.push(json!({ "name": k.name, "schema": schema_json(&k.ty), "type": ty }));
        }
        for v in &s.values {
            fields.push(json!({ "name": v.name, "schema": schema_json(&v.ty) }));
        }
        for h in &s.headers {
            let mut f = json!({ "name": h.field.name, "schema": schema_json(&h.field.ty), "type": "HEADER" });
            if let Some(k) = &h.key {
                f["headerKey"] = json!(k);
            }
            fields.push(f);
        }
        let reads: Vec<Json> = self
            .engine
            .queries
            .values()
            .filter(|q| q.input.name == s.name || q.rights.iter().any(|r| r.name == s.name))
            .map(|q| self.query_json(q))
            .collect();
        let writes: Vec<Json> =
            self.engine.queries.values().filter(|q| q.sink == s.name).map(|q| self.query_json(q)).collect();
        let window_type = s.window.map(|w| match w {
            WindowKind::Tumbling { .. } => "TUMBLING",
            WindowKind::Hopping { .. } => "HOPPING",
            WindowKind::Session { .. } => "SESSION",
        });
        Ok(Some(json!({
            "@type": "sourceDescription",
            "statementText": text,
            "sourceDescription": {
                "name": s.name,
                "windowType": window_type,
                "readQueries": reads,
                "writeQueries": writes,
                "fields": fields,
                "type": s.kind.name(),
                "timestamp": s.timestamp.clone().unwrap_or_default(),
                "statistics": "",
                "errorStats": "",
                "extended": extended,
                "keyFormat": s.key_serde.format.name(),
                "valueFormat": s.value_serde.format.name(),
                "topic": s.topic,
                "partitions": self.topics.partitions(&s.topic).unwrap_or(0),
                "replication": 1,
                "statement": s.sql,
                "queryOffsetSummaries": [],
                "sourceConstraints": [],
            },
            "warnings": [],
        })))
    }
}

/// Removes state files of queries that no longer exist (rebuildable from a changelog anyway).
fn remove_orphan_state_files(dir: &Path, live: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        // `<query id>.redb`, or a task's `<query id>#<partition>.redb`.
        let query_of = |stem: &str| stem.split_once('#').map_or(stem, |(q, _)| q).to_string();
        let orphan = path.extension().is_some_and(|e| e == "redb")
            && path.file_stem().and_then(|s| s.to_str()).is_some_and(|stem| !live.contains(&query_of(stem)));
        if orphan {
            tracing::info!(path = %path.display(), "removing the state file of a query that no longer exists");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The state files of query `id`'s tasks in `dir` (`<id>#<partition>.redb`), by name.
fn state_files_of(dir: &Path, id: &str) -> Vec<String> {
    let prefix = format!("{id}#");
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| e.path().file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .filter(|stem| stem.starts_with(&prefix))
        .collect()
}

/// A failed statement as ksqlDB's `statement_error` (HTTP 400), the message positioned
/// (`line L:C: ...`) when the error knows where.
pub(super) fn statement_error(e: &SqlError, text: &str) -> Reply {
    let code = match e.kind {
        ErrorKind::Server => ERROR_SERVER,
        ErrorKind::Parse | ErrorKind::Statement | ErrorKind::Processing => ERROR_BAD_STATEMENT,
    };
    let mut message = e.to_string();
    if e.kind == ErrorKind::Parse {
        // As ksqlDB: the positioned line, then the statement; our detail follows.
        let (first, detail) = message.split_once('\n').unwrap_or((&message, ""));
        let mut m = format!("{first}\n\nStatement: {}", text.trim());
        if !detail.is_empty() {
            m.push('\n');
            m.push_str(detail);
        }
        message = m;
    }
    Reply { status: 400, body: error_entity(code, &message, text, vec![]) }
}

/// Whether a new query reads its inputs from the start: `auto.offset.reset=earliest` (ksqlDB's
/// default is `latest`).
pub(super) fn reads_from_earliest(props: &BTreeMap<String, String>) -> bool {
    props
        .get("auto.offset.reset")
        .or_else(|| props.get("ksql.streams.auto.offset.reset"))
        .is_some_and(|s| s.eq_ignore_ascii_case("earliest"))
}

/// ksqlDB's `statement_error` (HTTP 400) for a statement that cannot run.
/// HTTP 500 with ksqlDB's generic error body.
fn server_error(message: impl Into<String>) -> Reply {
    Reply {
        status: 500,
        body: json!({ "@type": "generic_error", "error_code": ERROR_SERVER, "message": message.into() }),
    }
}

pub fn bad_statement(message: &str, text: &str) -> Reply {
    Reply { status: 400, body: error_entity(ERROR_BAD_STATEMENT, message, text, vec![]) }
}

/// ksqlDB's error for a request that is not a valid `/ksql` body.
pub fn bad_request(message: &str) -> Reply {
    Reply {
        status: 400,
        body: json!({ "@type": "generic_error", "error_code": ERROR_BAD_REQUEST, "message": message }),
    }
}
