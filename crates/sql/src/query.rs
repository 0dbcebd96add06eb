//! Persistent queries at run time: read input records, evaluate the plan, write output records.
//!
//! A query owns its state (aggregation groups, table contents for undo) and the offsets it has
//! consumed. Each step reads what is new on its input partitions and processes it in offset
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use freshet_common::limits::SQL_STATE_CACHE_ENTRIES;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Acc, AggSpec};
use crate::ast::{SourceKind, WindowKind, WindowSpec};
use crate::catalog::SourceDef;
use crate::error::Result;
use crate::expr::{CExpr, Env};
use crate::join::Side;
use crate::state::{Change, Restored, StateMap, StateStore};
use crate::topics::{Record, Topics};
use crate::value::Value;

/// Default grace period of windows without GRACE PERIOD (ksqlDB's 24 hours).
pub const DEFAULT_GRACE_MS: i64 = 24 * 3_600_000;

/// A row flowing through a query: column values laid out by the plan's scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub values: Vec<Value>,
    pub timestamp: i64,
}

/// What a query does with each input row.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Filter and project, row by row (streams, and tables without aggregation).
    Project {
        filter: Option<CExpr>,
        /// Table functions (EXPLODE): each input row becomes one row per element.
        table_functions: Vec<(usize, CExpr)>,
        key: Vec<CExpr>,
        value: Vec<CExpr>,
    },
    Aggregate(AggregatePlan),
    /// Join stages: each stage's left input is the previous stage's output; then, if any, an
    /// aggregation of the joined rows (the last stage's projection is then unused).
    Join(Vec<crate::join::JoinPlan>, Option<Box<AggregatePlan>>),
}

#[derive(Debug, Clone)]
pub struct AggregatePlan {
    pub filter: Option<CExpr>,
    pub group_by: Vec<CExpr>,
    pub specs: Vec<AggSpec>,
    /// Per aggregate, its argument expressions on the input row.
    pub args: Vec<Vec<CExpr>>,
    pub window: Option<WindowSpec>,
    /// EMIT FINAL: a window's result is emitted once, when the window closes.
    pub emit_final: bool,
    /// On the aggregated row: [group keys..., aggregate results..., ROWTIME, WINDOWSTART, WINDOWEND].
    pub having: Option<CExpr>,
    pub key: Vec<CExpr>,
    pub value: Vec<CExpr>,
}

/// What one input key of a table contributed to an aggregation, to take it back on update.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Contribution {
    group: Vec<u8>,
    args: Vec<Vec<Value>>,
}

/// An output record: key columns, value columns (None for a tombstone), timestamp, window.
pub type Emitted = (Vec<Value>, Option<Vec<Value>>, i64, Option<(i64, i64)>);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    /// Whether the last output for this group passed HAVING (so a failing update retracts it).
    emitted: bool,
    keys: Vec<Value>,
    accs: Vec<Acc>,
    timestamp: i64,
    window: Option<(i64, i64)>,
}

/// Why processing a record stopped: the record is bad (it is logged and the query goes on), or
/// the query's state store failed (the query stops).
#[derive(Debug)]
pub enum Failure {
    Record(String),
    State(crate::SqlError),
}

impl From<String> for Failure {
    fn from(m: String) -> Failure {
        Failure::Record(m)
    }
}

impl From<&str> for Failure {
    fn from(m: &str) -> Failure {
        Failure::Record(m.to_string())
    }
}

impl From<crate::SqlError> for Failure {
    fn from(e: crate::SqlError) -> Failure {
        Failure::State(e)
    }
}

/// Namespaces of a query's state maps (the first byte of every state key). Join stage `i`
/// uses `NS_JOIN + 3 * i` (left), `+ 1` (right) and `+ 2` (rows shown).
const NS_SCALARS: u8 = 0;
const NS_GROUPS: u8 = 1;
const NS_SESSIONS: u8 = 2;
const NS_TABLE_ROWS: u8 = 3;
const NS_ROUTES: u8 = 4;
pub(crate) const NS_JOIN: u8 = 16;
/// Stream-stream join buffers of stage `i`: `NS_JOIN_BUFFERS + 2 * i` (left) and `+ 1` (right),
/// one entry per buffered record. `SQL_MAX_JOINS` keeps both ranges apart.
pub(crate) const NS_JOIN_BUFFERS: u8 = 128;
const _: () = assert!(
    (NS_JOIN as usize) + 3 * freshet_common::limits::SQL_MAX_JOINS <= NS_JOIN_BUFFERS as usize
        && (NS_JOIN_BUFFERS as usize) + 2 * freshet_common::limits::SQL_MAX_JOINS <= 256
);
/// The one key of the scalars map.
const SCALARS_KEY: &[u8] = b"s";

/// A query's state outside its maps: stream times and the arrival sequence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Scalars {
    stream_time: i64,
    final_store_time: i64,
    final_close: i64,
    join_times: Vec<i64>,
    sequence: u64,
}

/// The changelog topic of a persistent query's state (compacted; key: namespace byte + key).
pub fn changelog_topic(query_id: &str) -> String {
    format!("_freshet_sql_{query_id}-changelog")
}

/// The changelog of a split query's repartition tasks that keep state (a regrouped table's:
/// where each key's row was sent, see [`Route::retract`]); partition `p` is task `#r<p>`'s.
pub fn repartition_changelog_topic(query_id: &str) -> String {
    format!("_freshet_sql_{query_id}-repartition-changelog")
}

/// A record that failed; the query logs it and goes on.
#[derive(Debug, Clone)]
pub struct ProcessingError {
    pub query: String,
    pub message: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

pub struct Query {
    pub id: String,
    pub sql: String,
    pub sink: String,
    pub input: SourceDef,
    /// The right inputs of join stages, in order.
    pub rights: Vec<SourceDef>,
    pub output: SourceDef,
    pub plan: Plan,
    /// Next offset to read, per input partition.
    pub offsets: Vec<i64>,
    pub right_offsets: Vec<Vec<i64>>,
    join: Vec<crate::join::JoinState>,
    /// The state store behind the maps (in memory until [`Query::open_state`]).
    store: StateStore,
    scalars: StateMap<Scalars>,
    groups: StateMap<Group>,
    /// TUMBLING and HOPPING windows in `groups` by (window end, window start, group), to close
    /// them in that order: emitted (EMIT FINAL) or forgotten once no record can change them.
    window_ends: BTreeSet<(i64, i64, Vec<u8>)>,
    /// SESSION windows: per group key, its sessions by window start. A key's sessions never
    /// overlap (a record merges every session within the gap), so they are ordered by end too.
    sessions: StateMap<BTreeMap<i64, Group>>,
    /// The sessions by (window end, group key, window start), to forget the expired ones.
    session_ends: BTreeSet<(i64, Vec<u8>, i64)>,
    /// For aggregations over a table: each input key's last contribution (group and arguments).
    table_rows: StateMap<Contribution>,
    /// A repartition stage of a regrouped table ([`Route::retract`]): per input key, the
    /// partition of the repartition topic its row was last sent to.
    routes: StateMap<i32>,
    stream_time: i64,
    /// EMIT FINAL over TUMBLING/HOPPING windows: the latest window start stored. A closed window
    /// whose start is more than the store's retention behind it has expired unseen and is not
    /// emitted (Kafka Streams' time-ordered window store hides it from the final-result fetch).
    final_store_time: i64,
    /// EMIT FINAL over SESSION windows: the close time up to which sessions were emitted.
    final_close: i64,
    env: Env,
    /// A transient query's output: kept here for its client instead of written to a topic.
    pub collected: Option<Vec<Emitted>>,
    /// After a restart: per input, per partition, the offset up to which this query had already
    /// written its outputs. Records below it rebuild the state without emitting again.
    pub replay_until: Option<Vec<Vec<i64>>>,
    /// Records read per input partition per step.
    pub poll_batch: usize,
    /// Reads only this partition of the input (a task of a query split by input partition;
    /// see [`Query::splits_by_partition`]). `None`: every partition.
    pub only_partition: Option<i32>,
    /// The name of the state store file (the query id, or a task's name).
    pub state_name: String,
    /// The changelog topic of this query's (or task's) state ([`changelog_topic`], or
    /// [`repartition_changelog_topic`] for a repartition stage's).
    pub changelog: String,
    /// The partition of the changelog topic this query's (or task's) state changes go to.
    pub changelog_partition: i32,
    /// A repartition stage of a split query ([`Query::repartition_stage`]): each input record
    /// goes unchanged to the partition of the output (a repartition topic) its key hashes to.
    pub repartition: Option<Route>,
    /// Per input: whether records of it are still on their way to what this task reads (a
    /// split join's repartition tasks have not sent all they read); set by the caller before
    /// each step. A join waits for such an input rather than process the others' records
    /// first ([`Query::step_collect`]).
    pub upstream_pending: Vec<bool>,
    /// Whether the last step read every partition to its end (no partition filled a batch).
    pub caught_up: bool,
    /// Since when a join has waited for a pending input (bounded by `MAX_TASK_IDLE_MS`).
    idle_since: Option<std::time::Instant>,
    /// A task of a [`Split::Levels`] query that sends its joined rows on: how they go to the
    /// next level's tasks (by its join key) or to the aggregating ones (by group key;
    /// `retract` for a join of tables).
    pub joined_route: Option<Route>,
    /// Joined rows routed by the last records processed, per partition of [`joined_topic`].
    routed: BTreeMap<i32, Vec<Record>>,
    /// A task of a [`Split::Levels`] query reading a [`joined_topic`] (an aggregating task, or
    /// a join level after the first): its (left) input records are joined rows the previous
    /// level encoded, not the input's format.
    pub pre_joined: bool,
    /// Per input, the VARCHAR value columns the query never reads ([`Query::unread_strings`]):
    /// their strings are not built. Found at the first step, when the plan is final.
    unread: Option<Vec<u64>>,
}

/// How a repartition stage routes its input records.
#[derive(Debug, Clone)]
pub struct Route {
    /// The repartition topic's partition count.
    pub partitions: i32,
    /// The key the records are partitioned by: an aggregation's GROUP BY, or a join side's
    /// join expression, on the input row.
    pub keys: Vec<CExpr>,
    /// Records this rejects are not sent on (an aggregation's WHERE, or the WHERE conjuncts
    /// a join pushed to this input's side).
    pub filter: Option<CExpr>,
    /// A table regrouped by other columns than its key: a key's row moves between groups, so
    /// the stage remembers where each key's row went (its state) and, when the row moves to
    /// another partition or leaves (a tombstone, or a row the filter rejects), first sends a
    /// tombstone of the key to the partition it was in: that task takes the row's
    /// contribution back (Kafka Streams' subtractor, sent where the old row was added).
    pub retract: bool,
}

/// How a stateful query splits into tasks that each own the state of some keys (groups, or
/// join keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The groups are the input's keys: the input's partitioning already puts every record
    /// of a group in one partition, so one task per input partition reads it directly.
    ByInputKey,
    /// Records are first sent, unchanged, to a repartition topic per input by the hash of
    /// their key (one stateless task per input partition); one task per partition of the
    /// repartition topics then owns the keys that hash to it (for a join, both sides' records
    /// of those keys: the same hash of the same key bytes the join matches on).
    Repartition,
    /// A join in levels ([`Query::join_levels`]): a stream joined on different keys in turn
    /// (each level's stages match on one key), and/or aggregated by other columns than its
    /// last join key. Repartition tasks as for [`Split::Repartition`]; then per level one
    /// task per partition (`Query::level_task`) that joins its keys and, but for the last,
    /// sends each joined row, encoded, to the next level's [`joined_topic`] by the next key
    /// (the last level: by its group key, when the aggregation is apart — a join of tables
    /// then takes a key's previous row back from the partition it went to, as
    /// [`Route::retract`]); then, when the aggregation is apart, one task per partition
    /// (`Query::aggregate_task`) aggregating its groups.
    Levels,
}

/// The repartition topic of input `input` (0: the left, or only, input; `i`: a join's right
/// input `i`) of a split query (see [`Split::Repartition`]).
pub fn repartition_topic(query_id: &str, input: usize) -> String {
    match input {
        0 => format!("_freshet_sql_{query_id}-repartition"),
        i => format!("_freshet_sql_{query_id}-repartition-{i}"),
    }
}

/// The topic a [`Split::Levels`] query's tasks of level `level - 1` send joined rows to, for
/// level `level` (or the aggregating tasks) to read; `level` ≥ 1.
pub fn joined_topic(query_id: &str, level: usize) -> String {
    match level {
        1 => format!("_freshet_sql_{query_id}-repartition-joined"),
        l => format!("_freshet_sql_{query_id}-repartition-joined-{l}"),
    }
}

/// The changelog of a [`Split::Levels`] query's tasks of join level `level` that send their
/// rows on (partition `p` is task `#j<p>`'s, or `#j<level>-<p>`'s).
pub fn join_changelog_topic(query_id: &str, level: usize) -> String {
    match level {
        0 => format!("_freshet_sql_{query_id}-join-changelog"),
        l => format!("_freshet_sql_{query_id}-join-{l}-changelog"),
    }
}

/// Whether `topic` is one of query `query_id`'s repartition topics ([`repartition_topic`],
/// [`joined_topic`]).
pub fn is_repartition_topic(topic: &str, query_id: &str) -> bool {
    let rest = topic.strip_prefix("_freshet_sql_").and_then(|t| t.strip_prefix(query_id));
    // `-repartition[-<input>]`, `-repartition-joined[-<level>]`.
    let Some(rest) = rest.and_then(|t| t.strip_prefix("-repartition")) else { return false };
    let rest = rest.strip_prefix("-joined").unwrap_or(rest);
    rest.is_empty() || rest.strip_prefix('-').is_some_and(|n| n.parse::<usize>().is_ok())
}

/// A joined row a [`Split::Levels`] task encoded (`None`: a tombstone).
fn decode_joined(rec: &Record) -> Result<Option<Row>, Failure> {
    let Some(v) = rec.value.as_deref() else { return Ok(None) };
    let values: Vec<Value> = postcard::from_bytes(v).map_err(|e| format!("undecodable joined row: {e}"))?;
    Ok(Some(Row { values, timestamp: rec.timestamp }))
}

/// The aggregation of a plan that aggregates (an aggregation, or an aggregated join).
fn aggregation_of(plan: &Plan) -> &AggregatePlan {
    match plan {
        Plan::Aggregate(plan) => plan,
        Plan::Join(_, Some(plan)) => plan,
        _ => unreachable!("called for aggregate plans"),
    }
}

impl Query {
    pub fn new(id: String, sql: String, input: SourceDef, output: SourceDef, plan: Plan, partitions: i32) -> Query {
        let store = StateStore::in_memory();
        Query {
            state_name: id.clone(),
            changelog: changelog_topic(&id),
            id,
            sql,
            sink: output.name.clone(),
            input,
            rights: vec![],
            output,
            plan,
            offsets: vec![0; partitions.max(1) as usize],
            right_offsets: vec![],
            join: vec![],
            scalars: store.map(NS_SCALARS, 1),
            groups: store.map(NS_GROUPS, SQL_STATE_CACHE_ENTRIES),
            window_ends: BTreeSet::new(),
            sessions: store.map(NS_SESSIONS, SQL_STATE_CACHE_ENTRIES),
            session_ends: BTreeSet::new(),
            table_rows: store.map(NS_TABLE_ROWS, SQL_STATE_CACHE_ENTRIES),
            routes: store.map(NS_ROUTES, SQL_STATE_CACHE_ENTRIES),
            store,
            stream_time: i64::MIN,
            final_store_time: i64::MIN,
            final_close: i64::MIN,
            env: Env::default(),
            collected: None,
            replay_until: None,
            poll_batch: crate::limits::POLL_BATCH,
            only_partition: None,
            changelog_partition: 0,
            repartition: None,
            upstream_pending: vec![],
            caught_up: false,
            idle_since: None,
            joined_route: None,
            routed: BTreeMap::new(),
            pre_joined: false,
            unread: None,
        }
    }

    /// Per input (0: the left or only one, `j`: right input `j`), its VARCHAR value columns
    /// (bit `v`: value column `v`, the first 64) that no expression evaluated on its rows reads
    /// (a projection's, an aggregation's, a repartition stage's key and filter; for a join
    /// every stage's keys, pushed-down and remaining WHERE, window keys and projection, and an
    /// aggregation of the joined rows), nor its timestamp extraction: decoding leaves them
    /// null and spares building their strings, and a join buffers and logs its rows without
    /// them. A join's input `j` sits at `stages[j - 1].left_width` in every joined row from
    /// stage `j - 1` on. A join's repartition stage (it forwards what it reads), a join level
    /// that sends its rows on (the later levels' expressions are not in its plan), and a join
    /// whose stages do not line up with its inputs read everything.
    fn unread_strings(&self) -> Vec<u64> {
        let inputs = self.rights.len() + 1;
        // Per input, the positions read in its own rows.
        let mut own: Vec<Vec<usize>> = vec![vec![]; inputs];
        let on_input: Vec<&CExpr> = match &self.plan {
            Plan::Project { filter, table_functions, key, value } => {
                filter.iter().chain(table_functions.iter().map(|(_, e)| e)).chain(key).chain(value).collect()
            }
            Plan::Aggregate(a) => a.filter.iter().chain(&a.group_by).chain(a.args.iter().flatten()).collect(),
            Plan::Join(stages, aggregated) => {
                if stages.len() + 1 != inputs || self.repartition.is_some() || self.joined_route.is_some() {
                    return vec![0; inputs];
                }
                // Positions read in joined rows (a left row is a prefix of one).
                let mut joined = vec![];
                for (s, stage) in stages.iter().enumerate() {
                    let on_joined = stage.filter.iter().chain(&stage.key).chain(&stage.value);
                    for e in on_joined.chain([&stage.left_key]).chain(&stage.pushed[0]) {
                        columns_read(e, &mut joined);
                    }
                    for e in [&stage.right_key].into_iter().chain(&stage.pushed[1]) {
                        columns_read(e, &mut own[s + 1]);
                    }
                    joined.extend(stage.window_key[0].iter().flat_map(|&(a, b, _)| [a, b]));
                    own[s + 1].extend(stage.window_key[1].iter().flat_map(|&(a, b, _)| [a, b]));
                }
                if let Some(a) = aggregated {
                    for e in a.filter.iter().chain(&a.group_by).chain(a.args.iter().flatten()) {
                        columns_read(e, &mut joined);
                    }
                }
                let offset = |j: usize| if j == 0 { 0 } else { stages[j - 1].left_width };
                for i in joined {
                    if let Some(j) = (0..inputs).rev().find(|&j| i >= offset(j)) {
                        own[j].push(i - offset(j));
                    }
                }
                vec![]
            }
        };
        let route = self.repartition.iter().flat_map(|r| r.keys.iter().chain(&r.filter));
        for e in on_input.into_iter().chain(route) {
            columns_read(e, &mut own[0]);
        }
        (0..inputs)
            .map(|j| {
                let src = if j == 0 { &self.input } else { &self.rights[j - 1] };
                if j == 0 && self.pre_joined {
                    return 0;
                }
                let nkeys = src.keys.len();
                let mut unread = 0;
                for (v, f) in src.values.iter().enumerate().take(64) {
                    let read = src.timestamp.as_deref() == Some(f.name.as_str()) || own[j].contains(&(nkeys + v));
                    if f.ty == crate::types::SqlType::String && !read {
                        unread |= 1 << v;
                    }
                }
                unread
            })
            .collect()
    }

    /// Input `input`'s unread VARCHAR columns ([`Query::unread_strings`]).
    fn unread_of(&self, input: usize) -> u64 {
        self.unread.as_ref().and_then(|u| u.get(input)).copied().unwrap_or(0)
    }

    /// Whether (and how) the query's state splits into tasks, one per partition, each owning
    /// the state of its keys: an aggregation of one input (a table grouped by other columns
    /// than its key moves a key's row between groups: its repartition stage takes the row
    /// back from the old group's task, see [`Route::retract`]); a join of
    /// two inputs on a key (a foreign-key join, or a join of three inputs or more, runs as one
    /// task), aggregated too when a GROUP BY item is a join column (other groupings of a join
    /// run as one task). Queries that read ROWPARTITION or ROWOFFSET do not split: a repartition would
    /// change what they read; nor do queries over windowed sources.
    pub fn stateful_split(&self) -> Option<Split> {
        if self.input.window.is_some() || self.rights.iter().any(|r| r.window.is_some()) {
            return None;
        }
        let base = self.input.column_count();
        let pseudo = |i: usize| i == base + 1 || i == base + 2;
        let plan = match &self.plan {
            Plan::Aggregate(plan) if self.rights.is_empty() => plan,
            Plan::Join(stages, aggregated) if stages.len() == self.rights.len() => {
                return self.join_split(stages, aggregated.as_deref());
            }
            _ => return None,
        };
        let reads_pseudo =
            plan.group_by.iter().chain(plan.args.iter().flatten()).chain(&plan.filter).any(|e| e.reads_column(&pseudo));
        if reads_pseudo {
            return None;
        }
        let nkeys = self.input.keys.len();
        let mut key_columns: Vec<usize> = plan
            .group_by
            .iter()
            .filter_map(|e| match e {
                CExpr::Column(i) => Some(*i),
                _ => None,
            })
            .collect();
        key_columns.sort_unstable();
        let by_input_key = nkeys > 0 && plan.group_by.len() == nkeys && key_columns == (0..nkeys).collect::<Vec<_>>();
        match (by_input_key, self.input.kind) {
            (true, _) => Some(Split::ByInputKey),
            (false, SourceKind::Stream) => Some(Split::Repartition),
            (false, SourceKind::Table) => Some(Split::Repartition),
        }
    }

    /// [`Query::stateful_split`] of a join (aggregated or not): the stages of one level match
    /// on the same key value, so that one task owns every record of a key, of every input of
    /// the level. Stage 0
    /// matches on its left and right join columns; a later stage whose left join expression
    /// is one of the columns holding that key in the joined row so far (a side's join column,
    /// or the key a stage appends) joins in the same tasks, another starts a level
    /// ([`Split::Levels`]). An aggregation grouped by one of the last level's key columns is
    /// done by that level's tasks (each group then has one key), else by tasks of its own. No
    /// stage may be a foreign-key join, and nothing may read ROWPARTITION or ROWOFFSET (a
    /// repartition changes them).
    fn join_split(&self, stages: &[crate::join::JoinPlan], aggregated: Option<&AggregatePlan>) -> Option<Split> {
        let (levels, apart) = self.join_levels_of(stages, aggregated)?;
        let base = self.input.column_count();
        let mut pseudo: BTreeSet<usize> = [base + 1, base + 2].into();
        let mut reads_pseudo = false;
        for (stage, right) in stages.iter().zip(&self.rights) {
            let (lw, rbase) = (stage.left_width, right.column_count());
            let right_pseudo = |i: usize| i == rbase + 1 || i == rbase + 2;
            reads_pseudo |= stage.left_key.reads_column(&|i| pseudo.contains(&i))
                || stage.pushed[0].as_ref().is_some_and(|e| e.reads_column(&|i| pseudo.contains(&i)))
                || stage.right_key.reads_column(&right_pseudo)
                || stage.pushed[1].as_ref().is_some_and(|e| e.reads_column(&right_pseudo));
            // The joined row: the left's columns, the right's, then the key.
            pseudo.extend([lw + rbase + 1, lw + rbase + 2]);
            let joined_pseudo = |i: usize| pseudo.contains(&i);
            let mut on_joined = stage.key.iter().chain(&stage.value).chain(&stage.filter);
            reads_pseudo |= on_joined.any(|e| e.reads_column(&joined_pseudo));
        }
        if let Some(agg) = aggregated {
            let mut read = agg.group_by.iter().chain(agg.args.iter().flatten()).chain(&agg.filter);
            reads_pseudo |= read.any(|e| e.reads_column(&|i| pseudo.contains(&i)));
        }
        let split = if levels.len() == 1 && !apart { Split::Repartition } else { Split::Levels };
        (!reads_pseudo).then_some(split)
    }

    /// A join's levels: the ranges of its stages that each match on one key value (a later
    /// stage's left join expression is one of the columns holding the level's key — a side's
    /// join column, or the key a stage appends to its joined row — or it starts a level), and
    /// whether its aggregation (if any) is apart: grouped by none of the last level's key
    /// columns. `None` when the join cannot be split: a foreign-key stage, or several levels
    /// over a table (a level's output goes on as a stream of joined rows).
    fn join_levels_of(
        &self,
        stages: &[crate::join::JoinPlan],
        aggregated: Option<&AggregatePlan>,
    ) -> Option<(Vec<std::ops::Range<usize>>, bool)> {
        let column = |e: &CExpr| match e {
            CExpr::Column(i) => Some(*i),
            _ => None,
        };
        let mut levels = vec![];
        let mut start = 0;
        // The columns holding the current level's key in the joined row so far.
        let mut keys: BTreeSet<usize> = BTreeSet::new();
        for (k, stage) in stages.iter().enumerate() {
            if stage.shape == crate::join::JoinShape::ForeignKey {
                return None;
            }
            let left = column(&stage.left_key);
            if k > 0 && !left.is_some_and(|c| keys.contains(&c)) {
                levels.push(start..k);
                start = k;
                keys.clear();
            }
            keys.extend(left);
            if let Some(c) = column(&stage.right_key) {
                keys.insert(stage.left_width + c);
            }
            keys.insert(stage.left_width + stage.right_width);
        }
        levels.push(start..stages.len());
        if levels.len() > 1 && self.input.kind != SourceKind::Stream {
            return None;
        }
        let apart =
            aggregated.is_some_and(|agg| !agg.group_by.iter().any(|e| column(e).is_some_and(|c| keys.contains(&c))));
        Some((levels, apart))
    }

    /// The levels of a [`Split::Levels`] join (stage ranges) and whether its aggregation is
    /// apart (see `join_levels_of`); one level and no aggregation apart for other queries.
    pub fn join_levels(&self) -> (Vec<std::ops::Range<usize>>, bool) {
        let one = (std::iter::once(0..self.rights.len()).collect(), false);
        match &self.plan {
            Plan::Join(stages, aggregated) => self.join_levels_of(stages, aggregated.as_deref()).unwrap_or(one),
            _ => one,
        }
    }

    /// A task of this (split) query that owns the state of partition `partition`: it reads
    /// only that partition of each of `topics` (per input: the input itself, or its
    /// repartition topic), keeps its state in the store file `state_name`, and logs it to that
    /// partition of the changelog.
    pub fn partition_task(&self, topics: &[String], partition: i32, state_name: String) -> Query {
        let input = SourceDef { topic: topics[0].clone(), ..self.input.clone() };
        self.task_of(input, &self.rights, &topics[1..], self.plan.clone(), partition, state_name)
    }

    /// A task running `plan` over partition `partition` of `input` and of `rights` (read from
    /// `right_topics`), its state in `state_name` and that partition of its changelog.
    fn task_of(
        &self,
        input: SourceDef,
        rights: &[SourceDef],
        right_topics: &[String],
        plan: Plan,
        partition: i32,
        state_name: String,
    ) -> Query {
        let mut q = Query::new(self.id.clone(), self.sql.clone(), input, self.output.clone(), plan, partition + 1);
        q.sink = self.sink.clone();
        q.poll_batch = self.poll_batch;
        q.only_partition = Some(partition);
        if !rights.is_empty() {
            let rights = rights.iter().zip(right_topics).map(|(r, t)| SourceDef { topic: t.clone(), ..r.clone() });
            q.set_rights(rights.collect());
            for offsets in &mut q.right_offsets {
                offsets.resize(partition as usize + 1, 0);
            }
        }
        q.state_name = state_name;
        q.changelog_partition = partition;
        q
    }

    /// Whether every input is a table (a join of tables is a table keyed by its join key).
    fn joins_tables(&self) -> bool {
        self.input.kind == SourceKind::Table && self.rights.iter().all(|r| r.kind == SourceKind::Table)
    }

    /// The task of level `level` of a [`Split::Levels`] query for partition `partition`: it
    /// reads that partition of `topics` (the level's left input — the first input's
    /// repartition topic, or the previous level's [`joined_topic`] — then the repartition
    /// topics of its stages' right inputs) and joins them with its stages. Unless it is the
    /// last level and the aggregation is not apart, it sends each joined row, encoded, to
    /// the partition of the next [`joined_topic`] (of `partitions` partitions) that the next
    /// level's join key (or the group key) hashes to, its state logged to partition
    /// `partition` of [`join_changelog_topic`]; else it writes the query's output, its state
    /// in the query's changelog.
    pub fn level_task(
        &self,
        level: usize,
        topics: &[String],
        partition: i32,
        partitions: i32,
        state_name: String,
    ) -> Query {
        let Plan::Join(stages, aggregated) = &self.plan else { unreachable!("levels of a join") };
        let (levels, apart) = self.join_levels();
        let range = levels[level].clone();
        let last = level + 1 == levels.len();
        let input = if level == 0 {
            SourceDef { topic: topics[0].clone(), ..self.input.clone() }
        } else {
            SourceDef { topic: topics[0].clone(), kind: SourceKind::Stream, window: None, ..self.input.clone() }
        };
        let plan = Plan::Join(stages[range.clone()].to_vec(), if last { aggregated.clone() } else { None });
        let mut q = self.task_of(input, &self.rights[range.clone()], &topics[1..], plan, partition, state_name);
        q.pre_joined = level > 0;
        let route = if !last {
            Some(Route { partitions, keys: vec![stages[range.end].left_key.clone()], filter: None, retract: false })
        } else if apart {
            let agg = aggregation_of(&self.plan);
            Some(Route {
                partitions,
                keys: agg.group_by.clone(),
                filter: agg.filter.clone(),
                retract: self.joins_tables(),
            })
        } else {
            None
        };
        if route.is_some() {
            q.joined_route = route;
            q.output = SourceDef { topic: joined_topic(&self.id, level + 1), ..self.output.clone() };
            q.changelog = join_changelog_topic(&self.id, level);
        }
        q
    }

    /// An aggregating task of a [`Split::Levels`] query whose aggregation is apart: reads
    /// partition `partition` of the last [`joined_topic`] and aggregates its groups, its state
    /// in `state_name` and partition `partition` of the query's changelog.
    pub fn aggregate_task(&self, partition: i32, state_name: String) -> Query {
        let kind = if self.joins_tables() { SourceKind::Table } else { SourceKind::Stream };
        let levels = self.join_levels().0.len();
        let input = SourceDef { topic: joined_topic(&self.id, levels), kind, window: None, ..self.input.clone() };
        let mut q = self.task_of(input, &[], &[], self.plan.clone(), partition, state_name);
        q.pre_joined = true;
        q
    }

    /// The repartition stage's task for partition `partition` of input `input` (0: the left
    /// or only input, `i`: a join's right input `i`; see [`Split::Repartition`]): its output is
    /// that input's repartition topic, of `partitions` partitions.
    ///
    /// A regrouped table's stage keeps state ([`Route::retract`]): in the store file
    /// `state_name`, logged to partition `partition` of [`repartition_changelog_topic`].
    pub fn repartition_stage(&self, input: usize, partition: i32, partitions: i32, state_name: String) -> Query {
        let src = if input == 0 { self.input.clone() } else { self.rights[input - 1].clone() };
        let (keys, filter) = match &self.plan {
            Plan::Aggregate(plan) => (plan.group_by.clone(), plan.filter.clone()),
            // WHERE's conjuncts pushed to one side (see `join::push_down`): what they reject
            // joins nothing, so it need not travel.
            Plan::Join(stages, _) if input == 0 => (vec![stages[0].left_key.clone()], stages[0].pushed[0].clone()),
            Plan::Join(stages, _) => (vec![stages[input - 1].right_key.clone()], stages[input - 1].pushed[1].clone()),
            Plan::Project { .. } => unreachable!("projections split without a repartition"),
        };
        let output = SourceDef { topic: repartition_topic(&self.id, input), ..src.clone() };
        let retract = src.kind == SourceKind::Table && matches!(self.plan, Plan::Aggregate(_));
        let mut q = self.task_of(src, &[], &[], self.plan.clone(), partition, state_name);
        q.output = output;
        q.repartition = Some(Route { partitions, keys, filter, retract });
        q.changelog = repartition_changelog_topic(&self.id);
        q
    }

    /// Whether this is a repartition stage that keeps state ([`Route::retract`]).
    pub fn routes_keys(&self) -> bool {
        self.repartition.as_ref().is_some_and(|r| r.retract)
    }

    /// A task's positions: per input, the next offset to read of its partition.
    pub fn task_positions(&self, partition: i32) -> Vec<Vec<i64>> {
        let at = |o: &Vec<i64>| o.get(partition as usize).copied().unwrap_or(0);
        std::iter::once(at(&self.offsets)).chain(self.right_offsets.iter().map(at)).map(|o| vec![o]).collect()
    }

    /// Positions a task at `positions` (as [`Query::task_positions`] gives them).
    pub fn set_task_positions(&mut self, partition: i32, positions: &[Vec<i64>]) {
        let p = partition as usize;
        let inputs = std::iter::once(&mut self.offsets).chain(self.right_offsets.iter_mut());
        for (offsets, at) in inputs.zip(positions) {
            if let Some(&at) = at.first() {
                if offsets.len() <= p {
                    offsets.resize(p + 1, 0);
                }
                offsets[p] = at;
            }
        }
    }

    /// Whether the query can run as one task per input partition, each on its own: it keeps no
    /// state (a projection of one input, no join, no aggregation), so records of different
    /// input partitions never meet.
    pub fn splits_by_partition(&self) -> bool {
        matches!(self.plan, Plan::Project { .. }) && self.rights.is_empty()
    }

    /// Starts reading every input at its current end (`auto.offset.reset=latest`).
    pub fn seek_to_end(&mut self, topics: &Arc<dyn Topics>) {
        let ends = |topic: &str| -> Vec<i64> {
            (0..topics.partitions(topic).unwrap_or(0)).map(|p| topics.end_offset(topic, p).unwrap_or(0)).collect()
        };
        self.offsets = ends(&self.input.topic);
        self.right_offsets = self.rights.iter().map(|r| ends(&r.topic)).collect();
    }

    /// The next offset to read per input (the left, then each right), per partition.
    pub fn positions(&self) -> Vec<Vec<i64>> {
        std::iter::once(self.offsets.clone()).chain(self.right_offsets.iter().cloned()).collect()
    }

    /// Sets the right inputs of a join's stages.
    pub fn set_rights(&mut self, rights: Vec<SourceDef>) {
        self.right_offsets = vec![vec![]; rights.len()];
        self.join = (0..rights.len()).map(|i| crate::join::JoinState::new(&self.store, i)).collect();
        self.rights = rights;
    }

    /// Moves the query's state into its store file in `dir` (`<state name>.redb`), restored
    /// from its partition of the changelog topic (which must exist): the file's missing tail is applied, a lost file
    /// rebuilt. From now on each step's state changes are to be taken ([`Query::take_changes`]),
    /// written to the changelog with the step's outputs, then applied
    /// ([`Query::state_committed`]).
    pub fn open_state(&mut self, dir: &Path, topics: &dyn Topics) -> Result<Restored> {
        // Maps share the store's file: all of them let go of it before it is opened again.
        self.use_store(StateStore::in_memory());
        let mut store = StateStore::open(dir, &self.state_name)?;
        let restored = store.restore(topics, &self.changelog, self.changelog_partition)?;
        self.use_store(store);
        let scalars = self.scalars.get(SCALARS_KEY)?.cloned();
        if let Some(s) = &scalars {
            self.stream_time = s.stream_time;
            self.final_store_time = s.final_store_time;
            self.final_close = s.final_close;
            crate::aggregate::sequence_at_least(s.sequence);
        }
        // The window indexes are not stored: rebuilt from the groups and sessions.
        let window_ends = &mut self.window_ends;
        window_ends.clear();
        self.groups.for_each_stored(|k, g| {
            if let Some((s, e)) = g.window {
                window_ends.insert((e, s, k.to_vec()));
            }
        })?;
        let session_ends = &mut self.session_ends;
        session_ends.clear();
        self.sessions.for_each_stored(|k, sessions| {
            for (start, g) in sessions {
                if let Some((_, end)) = g.window {
                    session_ends.insert((end, k.to_vec(), start));
                }
            }
        })?;
        if let Plan::Join(stages, _) = &self.plan {
            for (i, (join, stage)) in self.join.iter_mut().zip(stages).enumerate() {
                let time = scalars.as_ref().and_then(|s| s.join_times.get(i).copied());
                join.restored(stage.shape, time)?;
            }
        }
        Ok(restored)
    }

    /// Lets go of the query's state while another server runs it: its store file is synced and
    /// closed, and the query holds an empty in-memory store and the scalars of a new query.
    /// [`Query::open_state`] restores it from the file and the changelog when it comes back.
    pub fn release_state(&mut self) -> Result<()> {
        let synced = self.store.sync();
        self.use_store(StateStore::in_memory());
        self.window_ends.clear();
        self.session_ends.clear();
        self.stream_time = i64::MIN;
        self.final_store_time = i64::MIN;
        self.final_close = i64::MIN;
        synced
    }

    /// Puts every state map (the joins' too) in `store`, empty of cached entries.
    fn use_store(&mut self, store: StateStore) {
        self.scalars = store.map(NS_SCALARS, 1);
        self.groups = store.map(NS_GROUPS, SQL_STATE_CACHE_ENTRIES);
        self.sessions = store.map(NS_SESSIONS, SQL_STATE_CACHE_ENTRIES);
        self.table_rows = store.map(NS_TABLE_ROWS, SQL_STATE_CACHE_ENTRIES);
        self.routes = store.map(NS_ROUTES, SQL_STATE_CACHE_ENTRIES);
        for (i, j) in self.join.iter_mut().enumerate() {
            *j = crate::join::JoinState::new(&store, i);
        }
        self.store = store;
    }

    /// Whether the query's state lives in a store file with a changelog.
    pub fn has_state_store(&self) -> bool {
        self.store.is_persistent()
    }

    /// The state changes of the steps since the last call, as changelog records' keys and
    /// values (nothing without a store file).
    pub fn take_changes(&mut self) -> Result<Vec<Change>> {
        let mut out = vec![];
        // A projection keeps no state: nothing to log.
        if !self.store.is_persistent() || matches!(self.plan, Plan::Project { .. }) {
            return Ok(out);
        }
        if self.repartition.is_some() {
            self.routes.drain_changes(&mut out)?;
            return Ok(out);
        }
        let scalars = Scalars {
            stream_time: self.stream_time,
            final_store_time: self.final_store_time,
            final_close: self.final_close,
            join_times: self.join.iter().map(|j| j.stream_time()).collect(),
            sequence: crate::aggregate::current_sequence(),
        };
        self.scalars.insert(SCALARS_KEY.to_vec(), scalars)?;
        self.scalars.drain_changes(&mut out)?;
        self.groups.drain_changes(&mut out)?;
        self.sessions.drain_changes(&mut out)?;
        self.table_rows.drain_changes(&mut out)?;
        self.routes.drain_changes(&mut out)?;
        for j in &mut self.join {
            j.drain_changes(&mut out)?;
        }
        Ok(out)
    }

    /// Applies changes the changelog holds now (it ends at `next`) to the store file, and
    /// trims the maps' caches.
    pub fn state_committed(&mut self, changes: &[Change], next: i64) -> Result<()> {
        self.store.apply(changes, next)?;
        self.groups.evict();
        self.sessions.evict();
        self.table_rows.evict();
        self.routes.evict();
        for j in &mut self.join {
            j.evict();
        }
        Ok(())
    }

    /// Makes the store file durable (at a clean stop).
    pub fn sync_state(&mut self) -> Result<()> {
        self.store.sync()
    }

    /// Processes what is new on the inputs. Returns how many input records were read.
    ///
    /// Records of different input partitions are merged by timestamp (smallest first, a table's
    /// on a tie), as Kafka Streams chooses: so a stream-table join sees the table rows that
    /// were there at the stream record's time even when both inputs have a backlog. A join
    /// (several inputs) ends its step when a partition it read runs out of read records while
    /// it has more (a full batch was read) or its input is pending ([`Query::upstream_pending`]),
    /// and does not start one while a partition of a pending input has nothing read: the
    /// other inputs' records wait for its older ones (for at most `MAX_TASK_IDLE_MS`).
    pub fn step(&mut self, topics: &Arc<dyn Topics>, errors: &mut Vec<ProcessingError>) -> Result<usize> {
        let (read, outputs) = self.step_collect(topics, errors)?;
        for (partition, records) in outputs {
            topics.append(&self.output.topic, partition, records)?;
        }
        Ok(read)
    }

    /// [`Query::step`] without the writes: returns the records read and the output records per
    /// sink partition, for the caller to write (with its progress, atomically).
    pub fn step_collect(
        &mut self,
        topics: &Arc<dyn Topics>,
        errors: &mut Vec<ProcessingError>,
    ) -> Result<(usize, BTreeMap<i32, Vec<Record>>)> {
        let mut read = 0;
        if self.unread.is_none() {
            self.unread = Some(self.unread_strings());
        }
        let out_partitions = topics.partitions(&self.output.topic).unwrap_or(1).max(1);
        // Output records of this step, per sink partition: one append each, not one per record.
        let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        // (input, partition, topic, the records read and not yet processed, whether the
        // partition has more than was read)
        let mut heads: Vec<(usize, i32, String, std::collections::VecDeque<crate::topics::Consumed>, bool)> = vec![];
        let join = !self.rights.is_empty();
        let input_pending = |input: usize| self.upstream_pending.get(input).copied().unwrap_or(false);
        let mut waiting = false;
        for input in 0..=self.rights.len() {
            let topic = if input == 0 { self.input.topic.clone() } else { self.rights[input - 1].topic.clone() };
            let partitions = topics.partitions(&topic).unwrap_or(0);
            for p in 0..partitions {
                if self.only_partition.is_some_and(|only| only != p) {
                    continue;
                }
                let offsets = if input == 0 { &mut self.offsets } else { &mut self.right_offsets[input - 1] };
                if partitions as usize > offsets.len() {
                    offsets.resize(partitions as usize, 0);
                }
                let batch = topics.read(&topic, p, offsets[p as usize], self.poll_batch)?;
                if batch.is_empty() {
                    waiting |= join && input_pending(input);
                } else {
                    let more = batch.len() >= self.poll_batch;
                    heads.push((input, p, topic.clone(), batch.into(), more));
                }
            }
        }
        self.caught_up = heads.iter().all(|h| !h.4);
        if waiting {
            let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < std::time::Duration::from_millis(crate::limits::MAX_TASK_IDLE_MS) {
                return Ok((0, pending));
            }
        }
        self.idle_since = None;
        let pending_inputs: Vec<bool> = (0..=self.rights.len()).map(input_pending).collect();
        let mut stop = false;
        let is_table = |input: usize| {
            let src = if input == 0 { &self.input } else { &self.rights[input - 1] };
            src.kind == SourceKind::Table
        };
        let table_inputs: Vec<bool> = (0..=self.rights.len()).map(is_table).collect();
        loop {
            if stop {
                break;
            }
            let next = heads
                .iter()
                .enumerate()
                .filter_map(|(i, (input, _, _, q, _))| {
                    q.front().map(|c| (c.record.timestamp, !table_inputs[*input], i))
                })
                .min();
            let Some((_, _, h)) = next else { break };
            let (input, p) = (heads[h].0, heads[h].1);
            let c = heads[h].3.pop_front().expect("a head record");
            // A join's partition ran out of what was read of it while it has more: this is
            // the step's last record (its next records may be older than the others' next).
            stop = join && heads[h].3.is_empty() && (heads[h].4 || pending_inputs[input]);
            if input == 0 {
                self.offsets[p as usize] = c.offset + 1;
            } else {
                self.right_offsets[input - 1][p as usize] = c.offset + 1;
            }
            read += 1;
            let mut out = vec![];
            // A repartition stage sends the record on unchanged; the query processes it.
            let routed = self.repartition.is_some();
            let result = if routed {
                let retract = self.routes_keys();
                self.route(&c.record, p, c.offset).and_then(|to| self.send_to(c.record, to, retract, &mut pending))
            } else {
                self.process(&c.record, input, p, c.offset, &mut out)
            };
            let failed = match result {
                Ok(()) => None,
                Err(Failure::Record(m)) => Some(m),
                Err(Failure::State(e)) => return Err(e),
            };
            // Expressions that failed (and became NULL) are logged too; the row goes on.
            for message in failed.into_iter().chain(self.env.errors.drain(..)) {
                errors.push(ProcessingError {
                    query: self.id.clone(),
                    message,
                    topic: heads[h].2.clone(),
                    partition: p,
                    offset: c.offset,
                });
            }
            if routed {
                continue;
            }
            let replayed = self
                .replay_until
                .as_ref()
                .and_then(|r| r.get(input))
                .and_then(|o| o.get(p as usize))
                .is_some_and(|&until| c.offset < until);
            if replayed {
                continue;
            }
            if let Some(collected) = &mut self.collected {
                collected.append(&mut out);
                continue;
            }
            for (key, value, ts, window) in out {
                self.encode_output(out_partitions, key, value, ts, window, errors, &mut pending);
            }
        }
        for (partition, mut records) in std::mem::take(&mut self.routed) {
            pending.entry(partition).or_default().append(&mut records);
        }
        Ok((read, pending))
    }

    /// Whether the output key is the input's key columns as they are (no new key built).
    fn passes_key_through(&self) -> bool {
        match &self.plan {
            Plan::Project { key, .. } => {
                key.len() == self.input.keys.len()
                    && key.iter().enumerate().all(|(i, e)| matches!(e, CExpr::Column(c) if *c == i))
            }
            _ => false,
        }
    }

    /// Encodes an output record and queues it for its sink partition; a record that cannot be
    /// encoded goes to the processing log.
    #[allow(clippy::too_many_arguments)]
    fn encode_output(
        &self,
        partitions: i32,
        key: Vec<Value>,
        value: Option<Vec<Value>>,
        timestamp: i64,
        window: Option<(i64, i64)>,
        errors: &mut Vec<ProcessingError>,
        pending: &mut BTreeMap<i32, Vec<Record>>,
    ) {
        let fail = |message: String, errors: &mut Vec<ProcessingError>| {
            errors.push(ProcessingError {
                query: self.id.clone(),
                message,
                topic: self.output.topic.clone(),
                partition: 0,
                offset: -1,
            })
        };
        // A record without a key passed through keeps no key (ksqlDB's null key struct), where
        // a key of several columns would otherwise be written with every column null.
        let keyless = key.len() > 1 && key.iter().all(Value::is_null) && self.passes_key_through();
        let serialized = if keyless { Ok(None) } else { self.output.key_serde.serialize(&self.output.keys, &key) };
        let mut key_bytes = match serialized {
            Ok(k) => k,
            Err(e) => {
                fail(format!("Error serializing key: {e}"), errors);
                return;
            }
        };
        // A windowed key goes to the partition of its key without the window, as Kafka
        // Streams' WindowedStreamPartitioner sends it: every window of a key in one partition.
        let partition = match &key_bytes {
            Some(k) if partitions > 1 => freshet_common::partitioner::partition_for_key(k, partitions),
            _ => 0,
        };
        if let Some((start, end)) = window {
            let mut k = key_bytes.unwrap_or_default();
            match self.output.window {
                Some(WindowKind::Session { .. }) => {
                    k.extend_from_slice(&end.to_be_bytes());
                    k.extend_from_slice(&start.to_be_bytes());
                }
                _ => k.extend_from_slice(&start.to_be_bytes()),
            }
            key_bytes = Some(k);
        }
        let value_bytes = match &value {
            None => None,
            Some(v) => match self.output.value_serde.serialize_shared(&self.output.values, v) {
                Ok(b) => b,
                Err(e) => {
                    fail(format!("Error serializing value: {e}"), errors);
                    return;
                }
            },
        };
        // A sink with a TIMESTAMP column stamps its records with that column's value.
        let mut timestamp = timestamp;
        if let (Some(col), Some(v)) = (&self.output.timestamp, &value) {
            let found = match self.output.keys.iter().position(|f| &f.name == col) {
                Some(i) => key.get(i),
                None => self.output.values.iter().position(|f| &f.name == col).and_then(|i| v.get(i)),
            };
            let ts = match found {
                Some(Value::BigInt(t)) | Some(Value::Timestamp(t)) => Some(*t),
                Some(Value::Int(t)) => Some(*t as i64),
                Some(Value::String(s)) => crate::time::parse_with_format(s, self.output.timestamp_format.as_deref()),
                _ => None,
            };
            match ts {
                Some(t) if t >= 0 => timestamp = t,
                Some(t) => {
                    fail(format!("Skipping record with negative timestamp {t} from column {col}"), errors);
                    return;
                }
                None => {
                    fail(format!("Skipping record: no usable timestamp in column {col}"), errors);
                    return;
                }
            }
        }
        pending.entry(partition).or_default().push(Record {
            key: key_bytes.map(|k| crate::format::shared_copy(&k)),
            value: value_bytes,
            timestamp,
            headers: vec![],
        });
    }

    /// A repartition stage: the partition of the repartition topic that `rec` goes to (the
    /// hash of its key), or `None` when the query would ignore it (a stream record without a
    /// value, or one the aggregation's WHERE rejects). A table's tombstone goes by its key. A
    /// record that cannot be decoded or filtered is logged here; one whose key cannot be
    /// computed goes on (to partition 0) and is logged once, by the task that owns its key.
    fn route(&mut self, rec: &Record, partition: i32, offset: i64) -> Result<Option<i32>, Failure> {
        let route = self.repartition.as_ref().expect("a repartition stage");
        let row = match Self::decode(&self.input, rec, partition, offset, self.unread_of(0))? {
            Some(row) => row,
            // A regrouped table's tombstone only takes the key's row back (`send_to`).
            None if route.retract => return Ok(None),
            None if self.input.kind == SourceKind::Table => key_only_row(&self.input, rec, partition, offset),
            None => return Ok(None),
        };
        Self::route_row(route, &row.values, &mut self.env)
    }

    /// The partition `route` sends a row to: `None` when its filter rejects the row; the hash
    /// of its key, or partition 0 when the key cannot be computed (the task there logs the
    /// error, once).
    fn route_row(route: &Route, values: &[Value], env: &mut Env) -> Result<Option<i32>, Failure> {
        if let Some(f) = &route.filter {
            if f.eval(values, env)? != Value::Boolean(true) {
                return Ok(None);
            }
        }
        let logged = env.errors.len();
        let keys = eval_all(&route.keys, values, env);
        env.errors.truncate(logged);
        Ok(Some(match keys {
            Ok(keys) => freshet_common::partitioner::partition_for_key(&group_bytes(&keys), route.partitions),
            Err(_) => 0,
        }))
    }

    /// A join level's joined row (`None`: the join key's row deleted, a join of tables) goes,
    /// encoded and keyed by the join key, to the partition of the next [`joined_topic`] its
    /// route's key hashes to (the next level's join key, or the group key), unless the
    /// route's filter (the aggregation's WHERE) rejects it (a key that cannot be computed
    /// goes to partition 0: the task there logs the error).
    fn route_joined(&mut self, key: Vec<u8>, timestamp: i64, row: Option<Row>) -> Result<(), Failure> {
        let route = self.joined_route.as_ref().expect("a join task");
        let to = match &row {
            Some(row) => Self::route_row(route, &row.values, &mut self.env)?,
            None => None,
        };
        let value = match &row {
            Some(r) => Some(postcard::to_allocvec(&r.values).map_err(|e| format!("unencodable joined row: {e}"))?),
            None => None,
        };
        let rec = Record { key: Some(key.into()), value: value.map(Into::into), timestamp, headers: vec![] };
        let retract = route.retract;
        let mut routed = std::mem::take(&mut self.routed);
        let sent = self.send_to(rec, to, retract, &mut routed);
        self.routed = routed;
        sent
    }

    /// Queues `rec` for partition `to` (`None`: not sent). With `retract`, first sends a
    /// tombstone of its key to the partition the key's last record went to, if it leaves it
    /// ([`Route::retract`]).
    fn send_to(
        &mut self,
        rec: Record,
        to: Option<i32>,
        retract: bool,
        pending: &mut BTreeMap<i32, Vec<Record>>,
    ) -> Result<(), Failure> {
        if retract {
            let key = rec.key.as_deref().unwrap_or_default();
            let before = self.routes.get(key)?.copied();
            if let Some(before) = before.filter(|&b| Some(b) != to) {
                let tombstone = Record { key: rec.key.clone(), value: None, timestamp: rec.timestamp, headers: vec![] };
                pending.entry(before).or_default().push(tombstone);
            }
            match to {
                Some(to) if before != Some(to) => {
                    self.routes.insert(key.to_vec(), to)?;
                }
                None if before.is_some() => {
                    self.routes.remove(key)?;
                }
                _ => {}
            }
        }
        if let Some(to) = to {
            pending.entry(to).or_default().push(rec);
        }
        Ok(())
    }

    /// Decodes an input record into a row: keys, values, headers, pseudo-columns.
    /// `unread`: VARCHAR value columns that may be left null ([`Query::unread_strings`]).
    pub(crate) fn decode(
        src: &SourceDef,
        rec: &Record,
        partition: i32,
        offset: i64,
        unread: u64,
    ) -> Result<Option<Row>, String> {
        let mut key_bytes = rec.key.as_deref();
        let mut window = None;
        if let (Some(w), Some(k)) = (src.window, key_bytes) {
            let (core, win) = split_windowed_key(w, k)?;
            key_bytes = Some(core);
            window = Some(win);
        }
        let mut row = Vec::with_capacity(src.column_count() + 5);
        src.key_serde
            .deserialize_into(&src.keys, key_bytes, &mut row, 0)
            .map_err(|e| format!("Failed to deserialize key from topic: {}. {e}", src.topic))?;
        if rec.value.is_none() {
            return Ok(None);
        }
        src.value_serde
            .deserialize_into(&src.values, rec.value.as_deref(), &mut row, unread)
            .map_err(|e| format!("Failed to deserialize value from topic: {}. {e}", src.topic))?;
        for h in &src.headers {
            row.push(match &h.key {
                Some(k) => rec
                    .headers
                    .iter()
                    .rev()
                    .find(|(hk, _)| hk == k)
                    .and_then(|(_, v)| v.clone())
                    .map(Value::Bytes)
                    .unwrap_or(Value::Null),
                None => Value::Array(
                    rec.headers
                        .iter()
                        .map(|(k, v)| {
                            Value::Struct(vec![
                                ("KEY".into(), Value::String(k.clone())),
                                ("VALUE".into(), v.clone().map(Value::Bytes).unwrap_or(Value::Null)),
                            ])
                        })
                        .collect(),
                ),
            });
        }
        let mut timestamp = rec.timestamp;
        if let Some(col) = &src.timestamp {
            let idx = src
                .keys
                .iter()
                .chain(&src.values)
                .position(|f| &f.name == col)
                .ok_or_else(|| format!("timestamp column {col} is missing"))?;
            timestamp = match &row[idx] {
                Value::BigInt(t) => *t,
                Value::Int(t) => *t as i64,
                Value::Timestamp(t) => *t,
                Value::String(s) => crate::time::parse_with_format(s, src.timestamp_format.as_deref())
                    .ok_or_else(|| format!("Failed to parse timestamp '{s}'"))?,
                Value::Null => return Err(format!("timestamp column {col} is null")),
                other => return Err(format!("timestamp column {col} has unusable value {other}")),
            };
            // Kafka Streams skips records whose extracted timestamp is negative.
            if timestamp < 0 {
                return Err(format!("Skipping record with negative timestamp {timestamp} from column {col}"));
            }
        }
        row.push(Value::BigInt(timestamp));
        row.push(Value::Int(partition));
        row.push(Value::BigInt(offset));
        if let Some((s, e)) = window {
            row.push(Value::BigInt(s));
            row.push(Value::BigInt(e));
        }
        Ok(Some(Row { values: row, timestamp }))
    }

    fn process(
        &mut self,
        rec: &Record,
        input: usize,
        partition: i32,
        offset: i64,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        if self.pre_joined && self.rights.is_empty() {
            // A joined row a join task encoded (a join of tables: keyed by the join key, a
            // tombstone taking the key's row back).
            let row = decode_joined(rec)?;
            let table = self.input.kind == SourceKind::Table;
            if row.is_none() && !table {
                return Ok(());
            }
            let key = rec.key.as_deref().unwrap_or_default();
            return self.aggregate(key, rec.timestamp, table, row, out);
        }
        if let Plan::Join(stages, aggregated) = &self.plan {
            let src = if input == 0 { &self.input } else { &self.rights[input - 1] };
            let (row, key_row) = if self.pre_joined && input == 0 {
                // The previous level's joined row (a stream's: never a tombstone).
                let Some(row) = decode_joined(rec)? else { return Ok(()) };
                (Some(row.clone()), row)
            } else {
                let unread = self.unread_of(input);
                (Self::decode(src, rec, partition, offset, unread)?, key_only_row(src, rec, partition, offset))
            };
            let (mut stage, side) = if input == 0 { (0, Side::Left) } else { (input - 1, Side::Right) };
            // WHERE's conjuncts on this side alone: a record they reject joins nothing.
            if let (Some(f), Some(r)) = (&stages[stage].pushed[side as usize], &row) {
                if f.eval(&r.values, &mut self.env)? != Value::Boolean(true) {
                    return Ok(());
                }
            }
            let mut joined = vec![];
            self.join[stage].process(&stages[stage], side, row, &key_row, &mut self.env, &mut joined)?;
            // Each stage's output is the next stage's left input.
            while stage + 1 < stages.len() {
                stage += 1;
                let mut next = vec![];
                for j in joined {
                    let r = Row { values: j.row, timestamp: j.timestamp };
                    let (row, key_row) = if j.deleted { (None, r) } else { (Some(r.clone()), r) };
                    self.join[stage].process(&stages[stage], Side::Left, row, &key_row, &mut self.env, &mut next)?;
                }
                joined = next;
            }
            if aggregated.is_some() || self.joined_route.is_some() {
                // A join of tables is a table keyed by its join key (the joined row's last
                // value): each key's change takes back its previous contribution. A join with
                // a stream is a stream of joined rows. A level that sends its rows on (to the
                // next level, or to the aggregating tasks) sends them so.
                let table = self.joins_tables();
                for j in joined {
                    if j.deleted && !table {
                        continue;
                    }
                    let mut key = vec![];
                    if let Some(k) = j.row.last() {
                        k.key_bytes(&mut key);
                    }
                    let row = (!j.deleted).then_some(Row { values: j.row, timestamp: j.timestamp });
                    if self.joined_route.is_some() {
                        self.route_joined(key, j.timestamp, row)?;
                    } else {
                        self.aggregate(&key, j.timestamp, table, row, out)?;
                    }
                }
                return Ok(());
            }
            let plan = stages.last().expect("a join has stages");
            for j in joined {
                if j.deleted {
                    let k = eval_all(&plan.key, &j.row, &mut self.env)?;
                    out.push((k, None, j.timestamp, None));
                    continue;
                }
                if let Some(f) = &plan.filter {
                    if f.eval(&j.row, &mut self.env)? != Value::Boolean(true) {
                        continue;
                    }
                }
                let window = plan.window_key[0].and_then(|(s, e, _)| match (j.row.get(s), j.row.get(e)) {
                    (Some(Value::BigInt(s)), Some(Value::BigInt(e))) => Some((*s, *e)),
                    _ => None,
                });
                let (k, v) = project_owned(&plan.key, &plan.value, j.row, &mut self.env)?;
                out.push((k, Some(v), j.timestamp, window));
            }
            return Ok(());
        }
        let is_table = self.input.kind == SourceKind::Table;
        if is_table && rec.key.is_none() && !self.input.keys.is_empty() {
            // A table's row needs a key: a record without one is not an update.
            return Err("Skipping a table record with a null key".into());
        }
        let row = Self::decode(&self.input, rec, partition, offset, self.unread_of(0))?;
        match &self.plan {
            Plan::Project { filter, table_functions, key, value } => {
                let Some(row) = row else {
                    // A null value: for a table a delete of the key; for a stream a record with
                    // no value, passed on by a persistent query unless a filter needs the value
                    // (a push query shows no row for it, as ksqlDB's).
                    let transient = self.collected.is_some();
                    if !is_table && (filter.is_some() || transient) {
                        return Ok(());
                    }
                    let r = key_only_row(&self.input, rec, partition, offset);
                    let window = window_of(&self.input, &r.values);
                    // A key computed from more than the source's key columns (PARTITION BY
                    // over value columns) has no row to read: null, as in ksqlDB.
                    let nkeys = self.input.keys.len();
                    let mut k = Vec::with_capacity(key.len());
                    for e in key {
                        k.push(if !is_table && e.reads_column(&|i| i >= nkeys) {
                            Value::Null
                        } else {
                            e.eval(&r.values, &mut self.env).unwrap_or(Value::Null)
                        });
                    }
                    out.push((k, None, rec.timestamp, window));
                    return Ok(());
                };
                let window = window_of(&self.input, &row.values);
                if let Some(f) = filter {
                    if f.eval(&row.values, &mut self.env)? != Value::Boolean(true) {
                        // A table's row the filter rejects deletes the key from a persistent
                        // query's table; a push query just does not show it, as ksqlDB's.
                        if is_table && self.collected.is_none() {
                            let k = eval_all(key, &row.values, &mut self.env)?;
                            out.push((k, None, row.timestamp, window));
                        }
                        return Ok(());
                    }
                }
                if table_functions.is_empty() {
                    let timestamp = row.timestamp;
                    let (k, v) = project_owned(key, value, row.values, &mut self.env)?;
                    out.push((k, Some(v), timestamp, window));
                    return Ok(());
                }
                // Table functions: evaluate each to an array; emit one row per index up to the
                // longest, shorter ones padded with nulls.
                let mut arrays = vec![];
                // A failure evaluating a table function's arguments drops the record (ksqlDB);
                // the failure is logged.
                let failures = self.env.errors.len();
                for (_, f) in table_functions {
                    arrays.push(match f.eval(&row.values, &mut self.env)? {
                        Value::Array(items) => items,
                        _ => vec![],
                    });
                }
                if self.env.errors.len() > failures {
                    return Ok(());
                }
                let n = arrays.iter().map(Vec::len).max().unwrap_or(0);
                for i in 0..n {
                    let mut r = row.values.clone();
                    for a in &arrays {
                        r.push(a.get(i).cloned().unwrap_or(Value::Null));
                    }
                    let k = eval_all(key, &r, &mut self.env)?;
                    let v = eval_all(value, &r, &mut self.env)?;
                    out.push((k, Some(v), row.timestamp, window));
                }
                Ok(())
            }
            Plan::Aggregate(_) => {
                let key = rec.key.as_deref().unwrap_or_default();
                self.aggregate(key, rec.timestamp, is_table, row, out)
            }
            Plan::Join(..) => unreachable!("handled above"),
        }
    }

    /// Aggregates one input row (`None`: a table's deletion of `input_key`, or a stream
    /// record without a value); a table input (`is_table`) takes back the key's previous
    /// contribution first. `timestamp`: the record's, for a deletion.
    fn aggregate(
        &mut self,
        input_key: &[u8],
        timestamp: i64,
        is_table: bool,
        row: Option<Row>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        let plan = aggregation_of(&self.plan);
        // The row's group and aggregate arguments (None: a tombstone, or filtered out).
        let mut current = None;
        if let Some(row) = &row {
            let passes = match &plan.filter {
                Some(f) => f.eval(&row.values, &mut self.env)? == Value::Boolean(true),
                None => true,
            };
            if passes {
                let keys = eval_all(&plan.group_by, &row.values, &mut self.env)?;
                // Every aggregate's arguments in one vector (one allocation per record, not
                // one per aggregate), each aggregate's run found by `arg_runs`.
                let mut args = Vec::with_capacity(plan.args.iter().map(Vec::len).sum());
                for e in plan.args.iter().flatten() {
                    args.push(e.eval(&row.values, &mut self.env)?);
                }
                current = Some((keys, args));
            }
        }
        // For a table input, first take back the key's previous contribution. When the row
        // stays in the same group, the group is updated once (undo and add, one output).
        if is_table {
            if let Some(Contribution { group: gk, args }) = self.table_rows.remove(input_key)? {
                let same_group = current.as_ref().is_some_and(|(keys, _)| group_bytes(keys) == gk);
                if let Some(g) = self.groups.get_mut(&gk)? {
                    for (i, spec) in plan.specs.iter().enumerate() {
                        spec.undo(&mut g.accs[i], &args[i]);
                    }
                    if !same_group {
                        g.timestamp = row.as_ref().map(|r| r.timestamp).unwrap_or(timestamp);
                        emit_group(plan, g, out, &mut self.env)?;
                    }
                }
            }
        }
        let (Some(row), Some((keys, args))) = (row, current) else {
            return Ok(());
        };
        if keys.iter().any(Value::is_null) {
            return Err(Failure::Record(
                "Group-by column with null value in table or stream: the record is skipped".into(),
            ));
        }
        let ts = row.timestamp;
        self.stream_time = self.stream_time.max(ts);
        // One window, or none, without a vector of them.
        let tumbling: [Option<(i64, i64)>; 1];
        let mut hops = vec![];
        let windows: &[Option<(i64, i64)>] = match plan.window.map(|w| w.kind) {
            None => &[None],
            Some(WindowKind::Tumbling { size }) => {
                let start = ts - ts.rem_euclid(size);
                tumbling = [Some((start, start + size))];
                &tumbling
            }
            Some(WindowKind::Hopping { size, advance }) => {
                let mut start = ts - ts.rem_euclid(advance);
                while start > ts - size {
                    hops.push(Some((start, start + size)));
                    start -= advance;
                }
                hops.reverse();
                hops.retain(|w| w.is_some_and(|(s, _)| s >= 0));
                &hops
            }
            Some(WindowKind::Session { gap }) => {
                let args = arg_runs(plan, &args).map(<[Value]>::to_vec).collect();
                return self.session(keys, args, ts, gap, out);
            }
        };
        let default_grace = if plan.emit_final { 0 } else { DEFAULT_GRACE_MS };
        let grace = plan.window.and_then(|w| w.grace).unwrap_or(default_grace);
        let key_bytes = group_bytes(&keys);
        for &w in windows {
            if let Some((_, end)) = w {
                if self.stream_time >= end + grace {
                    continue; // the window is closed: a late record
                }
            }
            let mut gk = key_bytes.clone();
            if let Some((s, _)) = w {
                gk.extend_from_slice(&s.to_be_bytes());
            }
            if let Some((s, _)) = w {
                self.final_store_time = self.final_store_time.max(s);
            }
            let window_ends = &mut self.window_ends;
            let g = self.groups.get_or_insert_with(&gk, || {
                if let Some((s, e)) = w {
                    window_ends.insert((e, s, gk.clone()));
                }
                Group {
                    emitted: false,
                    keys: keys.clone(),
                    accs: plan.specs.iter().map(AggSpec::init).collect(),
                    timestamp: ts,
                    window: w,
                }
            })?;
            for ((spec, acc), args) in plan.specs.iter().zip(&mut g.accs).zip(arg_runs(plan, &args)) {
                spec.add(acc, args);
            }
            g.timestamp = g.timestamp.max(ts);
            if !plan.emit_final {
                emit_group(plan, g, out, &mut self.env)?;
            }
            if is_table {
                let args = arg_runs(plan, &args).map(<[Value]>::to_vec).collect();
                self.table_rows.insert(input_key.to_vec(), Contribution { group: gk, args })?;
            }
        }
        // Windows that closed, oldest first: their final results once (EMIT FINAL), or just
        // forgotten, as a later record for them is late and dropped. For a table input a closed
        // window is kept, so taking back a key's contribution to it still updates it.
        if plan.emit_final || !is_table {
            let now = self.stream_time;
            // The window store keeps a window for its size plus grace (or the RETENTION, if
            // longer) behind the latest window start it stored.
            let size = match plan.window.map(|w| w.kind) {
                Some(WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. }) => size,
                _ => 0,
            };
            let retention = plan.window.and_then(|w| w.retention).unwrap_or(0).max(size.saturating_add(grace));
            let oldest_visible = self.final_store_time.saturating_sub(retention);
            while let Some((end, _, _)) = self.window_ends.first() {
                if now < end + grace {
                    break;
                }
                let (_, start, k) = self.window_ends.pop_first().expect("a first window");
                if let Some(mut g) = self.groups.remove(&k)? {
                    if plan.emit_final && start >= oldest_visible {
                        emit_group(plan, &mut g, out, &mut self.env)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A record of a SESSION window (Kafka Streams' semantics): it merges every session of its
    /// key within the gap; a record whose merged session ended more than grace + gap behind stream
    /// time is late and dropped; sessions older than the retention (at least gap + grace) are
    /// forgotten.
    fn session(
        &mut self,
        keys: Vec<Value>,
        args: Vec<Vec<Value>>,
        ts: i64,
        gap: i64,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        let plan = aggregation_of(&self.plan);
        self.stream_time = self.stream_time.max(ts);
        let default_grace = if plan.emit_final { 0 } else { DEFAULT_GRACE_MS };
        let grace = plan.window.and_then(|w| w.grace).unwrap_or(default_grace);
        let retention = plan.window.and_then(|w| w.retention).unwrap_or(0).max(gap.saturating_add(grace));
        let horizon = self.stream_time.saturating_sub(retention);
        let close = self.stream_time.saturating_sub(grace).saturating_sub(gap);
        if plan.emit_final && close > self.final_close {
            // EMIT FINAL: the sessions that closed since the last emission (ended before the close
            // time), in order of their end. The record that moved the close time cannot merge
            // with them, so emitting them before it is processed is the same as after.
            let from = (self.final_close, Vec::new(), i64::MIN);
            let closed: Vec<(i64, Vec<u8>, i64)> =
                self.session_ends.range(from..).take_while(|(end, _, _)| *end < close).cloned().collect();
            for (_, k, start) in closed {
                if let Some(g) = self.sessions.get_mut(&k)?.and_then(|s| s.get_mut(&start)) {
                    emit_group(plan, g, out, &mut self.env)?;
                }
            }
            self.final_close = close;
        }
        while let Some((end, _, _)) = self.session_ends.first() {
            if *end >= horizon {
                break;
            }
            let (_, k, start) = self.session_ends.pop_first().expect("a first session");
            let emptied = self.sessions.get_mut(&k)?.is_some_and(|sessions| {
                sessions.remove(&start);
                sessions.is_empty()
            });
            if emptied {
                self.sessions.remove(&k)?;
            }
        }
        let key_bytes = group_bytes(&keys);
        // Sessions of this key that the record falls into (within the gap) merge into one: those
        // starting at most gap after it and ending at most gap before it, oldest first.
        let mut found: Vec<(i64, i64)> = vec![];
        if let Some(sessions) = self.sessions.get(&key_bytes)? {
            for (_, g) in sessions.range(..=ts.saturating_add(gap)).rev() {
                let Some((s, e)) = g.window else { continue };
                if e < ts.saturating_sub(gap) {
                    break;
                }
                found.push((s, e));
            }
        }
        found.reverse();
        let start = found.first().map_or(ts, |w| w.0.min(ts));
        let end = found.last().map_or(ts, |w| w.1.max(ts));
        if end < close {
            return Ok(()); // a late record
        }
        let mut merged: Vec<Group> = vec![];
        if let Some(sessions) = self.sessions.get_mut(&key_bytes)? {
            for (s, e) in found {
                if let Some(g) = sessions.remove(&s) {
                    self.session_ends.remove(&(e, key_bytes.clone(), s));
                    merged.push(g);
                }
            }
        }
        let mut accs: Vec<Acc> = plan.specs.iter().map(AggSpec::init).collect();
        let mut timestamp = ts;
        for g in &merged {
            timestamp = timestamp.max(g.timestamp);
            // Retract the old session (EMIT FINAL shows only closed sessions: nothing to retract).
            if !plan.emit_final {
                out.push((g.keys.clone(), None, g.timestamp, g.window));
            }
        }
        // Merge: re-add the merged sessions' accumulators by replaying their results is not
        // possible in general; merge accumulators pairwise where the aggregate allows it.
        for g in merged {
            for (i, spec) in plan.specs.iter().enumerate() {
                accs[i] = merge_acc(spec, &accs[i], &g.accs[i]);
            }
        }
        for (i, spec) in plan.specs.iter().enumerate() {
            spec.add(&mut accs[i], &args[i]);
        }
        let mut g = Group { keys, accs, timestamp, window: Some((start, end)), emitted: false };
        if !plan.emit_final {
            emit_group(plan, &mut g, out, &mut self.env)?;
        }
        self.session_ends.insert((end, key_bytes.clone(), start));
        self.sessions.get_or_insert_with(&key_bytes, BTreeMap::new)?.insert(start, g);
        Ok(())
    }
}

/// Combines two accumulators of the same aggregate (session merges).
fn merge_acc(spec: &AggSpec, a: &Acc, b: &Acc) -> Acc {
    match (a, b) {
        (Acc::Count(x), Acc::Count(y)) => Acc::Count(x + y),
        (Acc::Sum(x), Acc::Sum(y)) => Acc::Sum(crate::aggregate::add_values(x, y, &spec.result)),
        (Acc::Avg(s1, n1), Acc::Avg(s2, n2)) => {
            let s = match (s1, s2) {
                (Value::Null, s) | (s, Value::Null) => s.clone(),
                (x, y) => crate::expr::arith(
                    crate::ast::BinaryOp::Add,
                    x,
                    y,
                    &crate::value::type_of(x).unwrap_or(crate::types::SqlType::Double),
                )
                .unwrap_or(Value::Null),
            };
            Acc::Avg(s, n1 + n2)
        }
        (Acc::Extreme(x), Acc::Extreme(y)) => {
            let mut acc = Acc::Extreme(x.clone());
            if !y.is_null() {
                spec.add(&mut acc, std::slice::from_ref(y));
            }
            acc
        }
        (Acc::List(x), Acc::List(y)) => {
            let mut acc = Acc::List(x.clone());
            for v in y {
                spec.add(&mut acc, std::slice::from_ref(v));
            }
            acc
        }
        (Acc::Seq(x), Acc::Seq(y)) => spec.merge_seq(x, y),
        (Acc::Moments(s1, q1, n1), Acc::Moments(s2, q2, n2)) => Acc::Moments(s1 + s2, q1 + q2, n1 + n2),
        (Acc::Histogram(x), Acc::Histogram(y)) => {
            let mut h = x.clone();
            for (k, n) in y {
                if let Some(slot) = h.iter_mut().find(|(k2, _)| k2 == k) {
                    slot.1 += n;
                } else {
                    h.push((k.clone(), *n));
                }
            }
            Acc::Histogram(h)
        }
        _ => a.clone(),
    }
}

#[allow(clippy::type_complexity)]
fn emit_group(plan: &AggregatePlan, g: &mut Group, out: &mut Vec<Emitted>, env: &mut Env) -> Result<(), String> {
    let width = g.keys.len() + plan.specs.len() + 3;
    let mut row = Vec::with_capacity(width);
    row.extend_from_slice(&g.keys);
    for (i, spec) in plan.specs.iter().enumerate() {
        row.push(spec.result(&g.accs[i]));
    }
    row.push(Value::BigInt(g.timestamp));
    let (ws, we) = g.window.unwrap_or((0, 0));
    row.push(Value::BigInt(ws));
    row.push(Value::BigInt(we));
    // The key from the group's keys alone (aggregates null): a transient query's tombstone row.
    let mut key_row = Vec::with_capacity(width);
    key_row.extend_from_slice(&g.keys);
    key_row.extend(std::iter::repeat_with(|| Value::Null).take(plan.specs.len()));
    key_row.extend_from_slice(&row[g.keys.len() + plan.specs.len()..]);
    let k = eval_all(&plan.key, &key_row, env)?;
    if let Some(h) = &plan.having {
        if h.eval(&row, env)? != Value::Boolean(true) {
            // Retract only what was shown: a group that never passed emits nothing.
            if g.emitted {
                out.push((k, None, g.timestamp, g.window));
            }
            g.emitted = false;
            return Ok(());
        }
    }
    g.emitted = true;
    let v = eval_all(&plan.value, &row, env)?;
    out.push((k, Some(v), g.timestamp, g.window));
    Ok(())
}

/// A row with only the record's key columns set (what a tombstone deletes).
fn key_only_row(src: &SourceDef, rec: &Record, partition: i32, offset: i64) -> Row {
    let mut kb = rec.key.as_deref();
    let mut window = None;
    if let (Some(w), Some(k)) = (src.window, kb) {
        let split = split_windowed_key(w, k).ok();
        kb = split.map(|(core, _)| core);
        window = split.map(|(_, win)| win);
    }
    let mut r = src.key_serde.deserialize(&src.keys, kb).unwrap_or_default();
    r.resize(src.column_count(), Value::Null);
    r.push(Value::BigInt(rec.timestamp));
    r.push(Value::Int(partition));
    r.push(Value::BigInt(offset));
    if src.window.is_some() {
        match window {
            Some((start, end)) => {
                r.push(Value::BigInt(start));
                r.push(Value::BigInt(end));
            }
            None => {
                r.push(Value::Null);
                r.push(Value::Null);
            }
        }
    }
    Row { values: r, timestamp: rec.timestamp }
}

fn group_bytes(keys: &[Value]) -> Vec<u8> {
    let mut out = vec![];
    for k in keys {
        k.key_bytes(&mut out);
    }
    out
}

/// Evaluates a projection's key and value expressions on a row it may consume: a bare column
/// reference takes the column's value out of the row (its last reference does; earlier ones
/// clone), after every other expression has been evaluated on the intact row.
fn project_owned(
    key: &[CExpr],
    value: &[CExpr],
    mut row: Vec<Value>,
    env: &mut Env,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let width = row.len();
    let bare = |e: &CExpr| match e {
        CExpr::Column(i) if *i < width => Some(*i),
        _ => None,
    };
    let mut k = Vec::with_capacity(key.len());
    for e in key {
        k.push(if bare(e).is_some() { Value::Null } else { e.eval(&row, env)? });
    }
    let mut v = Vec::with_capacity(value.len());
    for e in value {
        v.push(if bare(e).is_some() { Value::Null } else { e.eval(&row, env)? });
    }
    // The bare references, keys then values: the last one of a column takes it, the others
    // clone it. Which is last is found walking backwards with a bit per column (columns past
    // 64, and every column of a projection over 128 items, always clone).
    let expr_at = |pos: usize| if pos < key.len() { &key[pos] } else { &value[pos - key.len()] };
    let n = key.len() + value.len();
    let mut seen = 0u64;
    let mut last = 0u128;
    for pos in (0..if n <= 128 { n } else { 0 }).rev() {
        if let Some(c) = bare(expr_at(pos)).filter(|&c| c < 64) {
            if seen & (1 << c) == 0 {
                seen |= 1 << c;
                last |= 1 << pos;
            }
        }
    }
    for pos in 0..n {
        if let Some(c) = bare(expr_at(pos)) {
            let taken = if n <= 128 && last & (1 << pos) != 0 {
                std::mem::replace(&mut row[c], Value::Null)
            } else {
                row[c].clone()
            };
            if pos < key.len() {
                k[pos] = taken;
            } else {
                v[pos - key.len()] = taken;
            }
        }
    }
    Ok((k, v))
}

/// Appends the row positions `e` reads to `out`.
fn columns_read(e: &CExpr, out: &mut Vec<usize>) {
    let seen = std::cell::RefCell::new(std::mem::take(out));
    e.reads_column(&|i| {
        seen.borrow_mut().push(i);
        false
    });
    *out = seen.into_inner();
}

/// Each aggregate's arguments, in order, from all of them evaluated into one vector.
fn arg_runs<'a>(plan: &'a AggregatePlan, args: &'a [Value]) -> impl Iterator<Item = &'a [Value]> + 'a {
    let mut at = 0;
    plan.args.iter().map(move |a| {
        let run = &args[at..at + a.len()];
        at += a.len();
        run
    })
}

fn eval_all(exprs: &[CExpr], row: &[Value], env: &mut Env) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(exprs.len());
    for e in exprs {
        out.push(e.eval(row, env)?);
    }
    Ok(out)
}

fn window_of(src: &SourceDef, row: &[Value]) -> Option<(i64, i64)> {
    src.window?;
    let n = src.column_count() + 3;
    Some((row.get(n)?.as_i64()?, row.get(n + 1)?.as_i64()?))
}

/// Splits a windowed key (Kafka Streams' layout) into the key and the window.
pub fn split_windowed_key(w: WindowKind, k: &[u8]) -> Result<(&[u8], (i64, i64)), String> {
    let read = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    match w {
        WindowKind::Session { .. } => {
            if k.len() < 16 {
                return Err("session-windowed key too short".into());
            }
            let n = k.len();
            Ok((&k[..n - 16], (read(&k[n - 8..]), read(&k[n - 16..n - 8]))))
        }
        WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => {
            if k.len() < 8 {
                return Err("windowed key too short".into());
            }
            let n = k.len();
            let start = read(&k[n - 8..]);
            Ok((&k[..n - 8], (start, start + size)))
        }
    }
}
