//! Which persistent queries this SQL server runs, when several share a cluster.
//!
//! Every SQL server on a cluster (each `serve --external-kafka` process, and the embedded
//! broker's own engine) joins one consumer group, [`PLACEMENT_GROUP`], subscribed to the
//! [`PLACEMENT_TOPIC`] of `SQL_PLACEMENT_SLOTS` partitions, with the KIP-848 protocol the
//! cluster's group coordinator already speaks: no protocol of Freshet's own. A query runs on the
//! member assigned the slot (partition) its task name hashes to ([`slot`], Kafka's default
//! partitioner). Every server knows every query (each follows the command topic); only the
//! slot's owner steps it.
//!
//! Handing a query over: the coordinator takes a slot from a member only after that member
//! reported it no longer owns it, and a server reports that only after it stopped the slot's
//! queries (at a step boundary, so every step it began is committed). The new owner settles
//! the query's transactional id (which fences a zombie previous owner on a transactional
//! cluster), reads the query's progress, restores its state from the changelog, and goes on
//! from that progress.
//!
//! Each server is a static member (KIP-345): its instance id is kept in the state directory,
//! so a restarted server, SIGKILLed or not, takes its slots back at once instead of leaving
//! them idle until its old session times out. Where the topics have no groups, or without a
//! state directory (`freshet sql-test`), one server runs every query.
//!
//! The unit placed is a [`Task`]: a whole query, or, for a query that keeps no state (a
//! projection of one input), one input partition of it, so that the partitions of one busy
//! stream are processed by several servers. A task commits on its own (its own transactional
//! id and progress record).
//!
//! Architecture invariant: a task is stepped only while it is in `SqlServer::running`, and
//! it is in there only between `acquire` (state restored, offsets at its recorded progress)
//! and `release` (stopped between steps; the query's state synced and dropped from memory
//! with its last task here).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use freshet_common::config::TopicConfig;
use freshet_common::limits::{SQL_GROUP_HEARTBEAT_MS, SQL_PLACEMENT_SLOTS};
use freshet_common::partitioner::partition_for_key;
use freshet_common::topics::Member;
use serde_json::{json, Value as Json};

use freshet_sql::query::{is_repartition_topic, joined_topic, repartition_topic, Split};
use freshet_sql::state::Restored;
use freshet_sql::SqlError;

use super::ksql::SqlServer;
use super::SqlTopics;

/// The topic whose partitions are the slots queries are placed by (it holds no records).
pub const PLACEMENT_TOPIC: &str = "_freshet_sql_placement";

/// The consumer group of the SQL servers of a cluster.
pub const PLACEMENT_GROUP: &str = "_freshet_sql";

/// The file in the state directory that holds this server's instance id.
const INSTANCE_FILE: &str = "instance-id";

/// The slot of a query: the partition of [`PLACEMENT_TOPIC`] its id falls in.
pub fn slot(query_id: &str) -> i32 {
    partition_for_key(query_id.as_bytes(), SQL_PLACEMENT_SLOTS)
}

/// This server's membership in the placement group.
pub struct Placement {
    member: Member,
    /// The slots the group assigned this server (none until the first heartbeat answers).
    owned: BTreeSet<i32>,
    last: Option<Instant>,
    /// Heartbeat at the next chance: after joining, or after giving up slots.
    due: bool,
}

impl Placement {
    /// Creates the placement topic if needed and names this server (its instance id, kept in
    /// `state_dir`). The group is joined by the first [`SqlServer::place`].
    pub fn open(topics: &dyn SqlTopics, state_dir: &Path) -> std::io::Result<Placement> {
        if topics.partitions(PLACEMENT_TOPIC).is_none() {
            // It holds no records: only its partitions matter.
            let config = TopicConfig::from_pairs([("cleanup.policy", "delete"), ("retention.ms", "60000")])
                .expect("valid placement topic config");
            topics.create_topic_with(PLACEMENT_TOPIC, SQL_PLACEMENT_SLOTS, config).map_err(std::io::Error::other)?;
        }
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(INSTANCE_FILE);
        let instance = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let id = format!("freshet-sql-{}", uuid::Uuid::new_v4().simple());
                let tmp = state_dir.join(format!("{INSTANCE_FILE}.tmp"));
                std::fs::write(&tmp, &id)?;
                std::fs::rename(&tmp, &path)?;
                id
            }
        };
        Ok(Placement {
            member: Member { instance_id: Some(instance), ..Member::default() },
            owned: BTreeSet::new(),
            last: None,
            due: true,
        })
    }

    fn due(&self) -> bool {
        self.due || self.last.is_none_or(|t| t.elapsed() >= Duration::from_millis(SQL_GROUP_HEARTBEAT_MS))
    }
}

/// A unit of work placed on one server: a whole query, or one partition of a query that
/// splits: a projection by input partition ([`freshet_sql::query::Query::splits_by_partition`]),
/// an aggregation or a join by the partitions that own its keys
/// ([`freshet_sql::query::Query::stateful_split`]), after a repartition stage per input
/// partition when those keys are not the input's keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Task {
    pub query: String,
    /// Before `partition`: a step goes through a query's repartition tasks before its owning
    /// tasks, which then read what they just wrote.
    pub stage: Stage,
    pub partition: Option<i32>,
}

/// Which part of a query a [`Task`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// A repartition stage of input `.0` (0: the left or only input, `i`: a join's right
    /// input `i`): input partition → that input's repartition topic (stateless, but for a
    /// regrouped table's, which remembers where each key's row went).
    Repartition(usize),
    /// A join level `.0` of a `Split::Levels` join that sends its joined rows on (to the next
    /// level by its join key, or to the aggregating tasks by group key).
    Join(usize),
    /// The query itself (whole, or one partition of it).
    Main,
}

impl Task {
    fn main(query: &str, partition: Option<i32>) -> Task {
        Task { query: query.to_string(), stage: Stage::Main, partition }
    }

    /// `<query id>`, `<query id>#<partition>`, or for a repartition task `<query id>#r<partition>`
    /// (`#r<input>-<partition>` for a join's right input), for a join level's task
    /// `<query id>#j<partition>` (`#j<level>-<partition>` after the first level):
    /// what the slot is computed from, the
    /// key of the task's progress record, the name of its state file, and (after
    /// `freshet-sql-`) its transactional id.
    pub fn name(&self) -> String {
        match (self.stage, self.partition) {
            (Stage::Main, Some(p)) => format!("{}#{p}", self.query),
            (Stage::Repartition(0), Some(p)) => format!("{}#r{p}", self.query),
            (Stage::Repartition(i), Some(p)) => format!("{}#r{i}-{p}", self.query),
            (Stage::Join(0), Some(p)) => format!("{}#j{p}", self.query),
            (Stage::Join(l), Some(p)) => format!("{}#j{l}-{p}", self.query),
            (_, None) => self.query.clone(),
        }
    }

    /// The transactional id the task's commits are made with.
    pub fn owner(&self) -> String {
        format!("freshet-sql-{}", self.name())
    }

    /// Whether the task runs a copy of its query of its own (a split query's task, with its
    /// own state), rather than the query itself.
    fn has_instance(&self, split: Option<Split>) -> bool {
        split.is_some() && self.partition.is_some()
    }
}

impl SqlServer {
    /// Decides, once, when query `id` is created, whether its state splits over tasks (one
    /// per partition): an aggregation or join that can
    /// ([`freshet_sql::query::Query::stateful_split`]) over inputs of more than one partition,
    /// where state lives in files. The decision goes
    /// into the statement's command, so every server (and every restart) runs the query the
    /// same way; queries created before tasks could own state have none and run whole. (Over
    /// one partition, one task would own every group anyway: it reads the input directly.)
    pub(super) fn decide_split(&mut self, id: &str) {
        let split = self.state_dir.is_some()
            && self.engine.queries.get(id).is_some_and(|q| q.stateful_split().is_some() && self.width(q) > 1);
        if split {
            self.split.insert(id.to_string());
        } else {
            self.split.remove(id);
        }
    }

    /// How query `q` splits its state over tasks, if it does (see `decide_split`).
    pub(super) fn stateful_split(&self, q: &freshet_sql::query::Query) -> Option<Split> {
        if !self.split.contains(&q.id) || self.state_dir.is_none() {
            return None;
        }
        q.stateful_split()
    }

    /// The most partitions of one of query `q`'s inputs (at least 1).
    fn width(&self, q: &freshet_sql::query::Query) -> i32 {
        let inputs = std::iter::once(&q.input).chain(&q.rights);
        inputs.map(|s| self.topics.partitions(&s.topic).unwrap_or(1)).max().unwrap_or(1).max(1)
    }

    /// How many tasks own a split query's state: as many as its repartition topic has
    /// partitions once it exists (created with the query's [`SqlServer::width`]), else the
    /// width: fixed once the topic is there, so the state is split that way for good.
    fn owners(&self, q: &freshet_sql::query::Query, split: Split) -> i32 {
        let width = self.width(q);
        match split {
            Split::ByInputKey => width,
            Split::Repartition | Split::Levels => self.topics.partitions(&repartition_topic(&q.id, 0)).unwrap_or(width),
        }
    }

    /// The tasks of query `q`: one per input partition when it splits by partition and
    /// several servers may share it (and when it repartitions, one per input partition of
    /// each input, then one per repartition-topic partition); else the whole query.
    fn tasks_of(&self, q: &freshet_sql::query::Query) -> Vec<Task> {
        let input_partitions = |i: usize| {
            let src = if i == 0 { &q.input } else { &q.rights[i - 1] };
            self.topics.partitions(&src.topic).unwrap_or(1).max(1)
        };
        let split = |stage, n: i32| (0..n).map(move |p| Task { query: q.id.clone(), stage, partition: Some(p) });
        if self.placement.is_some() && q.splits_by_partition() {
            return split(Stage::Main, input_partitions(0)).collect();
        }
        match self.stateful_split(q) {
            None => vec![Task::main(&q.id, None)],
            Some(Split::ByInputKey) => split(Stage::Main, input_partitions(0)).collect(),
            Some(Split::Repartition) => {
                let stages = (0..=q.rights.len()).flat_map(|i| split(Stage::Repartition(i), input_partitions(i)));
                stages.chain(split(Stage::Main, self.owners(q, Split::Repartition))).collect()
            }
            Some(Split::Levels) => {
                let n = self.owners(q, Split::Levels);
                let stages = (0..=q.rights.len()).flat_map(|i| split(Stage::Repartition(i), input_partitions(i)));
                let joins = (0..sending_levels(q)).flat_map(|l| split(Stage::Join(l), n));
                stages.chain(joins).chain(split(Stage::Main, n)).collect()
            }
        }
    }

    /// Whether this server is to run `task` now.
    fn should_run(&self, task: &Task) -> bool {
        self.placement.as_ref().is_none_or(|p| p.owned.contains(&slot(&task.name())))
    }

    /// Stops every task of query `id` here; true if one ran.
    pub(super) fn stop_tasks(&mut self, id: &str) -> bool {
        let before = self.running.len();
        self.running.retain(|t| t.query != id);
        let tasks: Vec<Task> = self.instances.keys().filter(|t| t.query == id).cloned().collect();
        for task in tasks {
            self.drop_instance(&task);
        }
        self.running.len() != before
    }

    /// Lets go of a split task's own copy of its query (its state file synced and closed).
    fn drop_instance(&mut self, task: &Task) {
        if let Some(mut q) = self.instances.remove(task) {
            if let Err(e) = q.release_state() {
                tracing::warn!(task = %task.name(), error = %e, "could not sync the task's state file");
            }
        }
    }

    /// Heartbeats in the placement group when due, then starts and stops tasks to match what
    /// the group assigns this server.
    pub(super) fn place(&mut self) {
        let Some(p) = self.placement.as_mut() else { return };
        if !p.due() {
            return;
        }
        p.last = Some(Instant::now());
        p.due = false;
        let owned: Vec<i32> = p.owned.iter().copied().collect();
        match self.topics.heartbeat(PLACEMENT_GROUP, PLACEMENT_TOPIC, &mut p.member, &owned) {
            Ok(None) if p.member.epoch == 0 => {
                tracing::info!("the cluster has no consumer groups: this server runs every query");
                self.placement = None;
                self.running.clear();
            }
            Ok(None) => {}
            Ok(Some(assigned)) => {
                let assigned: BTreeSet<i32> = assigned.into_iter().collect();
                if assigned != p.owned {
                    tracing::info!(slots = ?assigned, "the SQL servers' group assigned this server its query slots");
                }
                // Slots given up are reported at once, so that their next owner starts soon.
                p.due = !p.owned.is_subset(&assigned);
                p.owned = assigned;
            }
            Err(e) => {
                // Fenced or unknown (e.g. a session that expired): stop everything, join again.
                tracing::warn!(error = %e, "rejoining the SQL servers' group");
                p.member = Member { instance_id: p.member.instance_id.take(), ..Member::default() };
                p.owned.clear();
                p.due = true;
            }
        }
        // Also after an unchanged answer: an input may have gained partitions (new tasks).
        self.reconcile();
    }

    /// Starts the tasks this server is to run and stops those it is not. A query a failure
    /// stopped here is stopped only here: once none of its tasks is this server's it is the
    /// other servers' to run, and it starts again here (from its changelog) if one comes back.
    pub(super) fn reconcile(&mut self) {
        let moved: Vec<String> = self
            .failed
            .iter()
            .filter(|(_, (q, _))| !self.tasks_of(q).iter().any(|t| self.should_run(t)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in moved {
            if let Some((mut q, _)) = self.failed.remove(&id) {
                if let Err(e) = q.release_state() {
                    tracing::warn!(query = %id, error = %e, "could not sync the failed query's state file");
                }
                self.engine.queries.insert(id, q);
            }
        }
        let wanted: BTreeSet<Task> =
            self.engine.queries.values().flat_map(|q| self.tasks_of(q)).filter(|t| self.should_run(t)).collect();
        let gone: Vec<Task> = self.running.difference(&wanted).cloned().collect();
        for task in gone {
            self.release(&task);
        }
        let new: Vec<Task> = wanted.difference(&self.running).cloned().collect();
        if new.is_empty() {
            return;
        }
        // Each starting task's last transaction is settled (a commit a crash interrupted is
        // completed, an open one aborted, a previous runner fenced) before the progress is
        // read, once for all of them: so the progress read matches the outputs visible.
        for task in new.iter().filter(|t| !self.at_least_once.contains(&t.query)) {
            if let Err(e) = self.topics.settle_atomic(&task.owner()) {
                tracing::warn!(task = %task.name(), error = %e, "could not settle the task's last transaction");
            }
        }
        if let Err(e) = self.follow_progress() {
            tracing::warn!(error = %e, "could not read the queries' progress");
        }
        for task in new {
            // A task whose query failed while starting another of its tasks waits for its retry.
            if self.engine.queries.contains_key(&task.query) {
                self.acquire(&task);
            }
        }
    }

    /// Starts running `task` here, its transaction settled and the progress read by the caller
    /// (`reconcile`): restores its query's state (when no other task of the query runs here
    /// yet) and positions it at its recorded progress. A failure stops the query here (ERROR;
    /// retried after a wait).
    fn acquire(&mut self, task: &Task) {
        let started = Instant::now();
        let split = self.engine.queries.get(&task.query).and_then(|q| self.stateful_split(q));
        if task.has_instance(split) {
            match self.start_instance(task, split.expect("split")) {
                Ok(restored) => {
                    if let Some(restored) = restored {
                        tracing::info!(
                            task = %task.name(),
                            changelog_records = restored.records,
                            rebuilt = restored.rebuilt,
                            ms = started.elapsed().as_millis() as u64,
                            "task state restored"
                        );
                    }
                    tracing::debug!(task = %task.name(), "task started on this server");
                    self.running.insert(task.clone());
                }
                Err(e) => self.fail_query(&task.query, format!("starting task {}: {e}", task.name())),
            }
            return;
        }
        let attached = self.running.iter().any(|t| t.query == task.query);
        let restored = if attached { Ok(None) } else { self.attach_state(&task.query).map(Some) };
        match restored {
            Ok(restored) => {
                let own = self.progress.get(&task.name()).cloned();
                // A task's progress, or the progress the whole query recorded before it split.
                let whole = self.progress.get(&task.query).cloned();
                let replay = self.state_dir.is_none();
                let Some(q) = self.engine.queries.get_mut(&task.query) else { return };
                match (task.partition, own, whole) {
                    (Some(p), own, whole) => {
                        let at = own
                            .and_then(|o| o.first().and_then(|o| o.first()).copied())
                            .or_else(|| whole.and_then(|w| w.first().and_then(|o| o.get(p as usize)).copied()));
                        if let Some(at) = at {
                            if q.offsets.len() <= p as usize {
                                q.offsets.resize(p as usize + 1, 0);
                            }
                            q.offsets[p as usize] = at;
                        }
                    }
                    // Without a state file the state is rebuilt from the start offsets, and
                    // outputs up to the progress are not written again.
                    (None, Some(progress), _) if replay => q.replay_until = Some(progress),
                    (None, Some(progress), _) => {
                        if let Some((left, rights)) = progress.split_first() {
                            q.offsets = left.clone();
                            q.right_offsets = rights.to_vec();
                        }
                    }
                    (None, None, _) => {}
                }
                if let Some(restored) = restored {
                    tracing::info!(
                        query = %task.query,
                        changelog_records = restored.records,
                        rebuilt = restored.rebuilt,
                        ms = started.elapsed().as_millis() as u64,
                        "query state restored"
                    );
                }
                tracing::debug!(task = %task.name(), "task started on this server");
                self.running.insert(task.clone());
            }
            Err(e) => self.fail_query(&task.query, format!("restoring its state: {e}")),
        }
    }

    /// Starts a task of a split query (see [`Split`]) with its own copy of the query: a
    /// repartition task reads one partition of one input and writes that input's repartition
    /// topic (the query's repartition topics are created here, with the query's width, when
    /// they are not there yet); an owning task reads one partition of each repartition topic
    /// (or of the input, when the groups are the input's keys), with its state in its own
    /// store file and changelog partition. Each resumes at its recorded progress, else where
    /// the query was positioned at its creation (or, reading a repartition topic, at its
    /// start).
    fn start_instance(&mut self, task: &Task, split: Split) -> freshet_sql::Result<Option<Restored>> {
        let template = self.engine.queries.get(&task.query).expect("acquired tasks have a query");
        let p = task.partition.expect("split tasks have a partition");
        let inputs = template.rights.len() + 1;
        let owners = self.owners(template, split);
        let mut repartitions: Vec<String> = (0..inputs).map(|i| repartition_topic(&task.query, i)).collect();
        if split == Split::Levels {
            repartitions.extend((1..=sending_levels(template)).map(|l| joined_topic(&task.query, l)));
        }
        if split != Split::ByInputKey {
            for topic in &repartitions {
                if self.topics.partitions(topic).is_none() {
                    // Its records keep their input timestamps, which may be old (a replay): no
                    // time or size retention deletes them unread; the owning tasks purge what
                    // they committed past.
                    let config = TopicConfig::from_pairs([
                        ("cleanup.policy", "delete"),
                        ("retention.ms", "-1"),
                        ("retention.bytes", "-1"),
                    ])
                    .expect("valid repartition topic config");
                    self.topics.create_topic_with(topic, owners, config)?;
                }
            }
        }
        // Where the query was positioned at its creation, per input, for partition `p`.
        let created: Vec<Vec<i64>> = template.task_positions(p);
        // A join level's task reads its topics from their start.
        let level = |level: usize| {
            let topics = level_topics(template, level);
            (template.level_task(level, &topics, p, owners, task.name()), vec![vec![0]; topics.len()])
        };
        let (mut q, start) = match (task.stage, split) {
            (Stage::Repartition(i), _) => {
                let n = self.topics.partitions(&repartitions[i]).unwrap_or(owners);
                (template.repartition_stage(i, p, n, task.name()), vec![created[i].clone()])
            }
            (Stage::Main, Split::Repartition) => {
                (template.partition_task(&repartitions, p, task.name()), vec![vec![0]; inputs])
            }
            (Stage::Join(l), _) => level(l),
            (Stage::Main, Split::Levels) => match template.join_levels() {
                (_, true) => (template.aggregate_task(p, task.name()), vec![vec![0]]),
                (levels, false) => level(levels.len() - 1),
            },
            (Stage::Main, Split::ByInputKey) => {
                (template.partition_task(std::slice::from_ref(&template.input.topic), p, task.name()), created)
            }
        };
        let mut restored = None;
        if !matches!(task.stage, Stage::Repartition(_)) || q.routes_keys() {
            // A stateful repartition stage's changelog has a partition per input partition.
            let width = match task.stage {
                Stage::Main | Stage::Join(_) => owners,
                Stage::Repartition(_) => self.topics.partitions(&q.input.topic).unwrap_or(1),
            };
            let changelog = q.changelog.clone();
            match self.topics.partitions(&changelog) {
                None => {
                    let config =
                        TopicConfig::from_pairs([("cleanup.policy", "compact")]).expect("valid changelog config");
                    self.topics.create_topic_with(&changelog, width, config)?;
                }
                Some(have) if have <= p => {
                    // Its input gained partitions after its state was split over `have`
                    // tasks: keys would move between tasks. (Kafka Streams refuses the same.)
                    return Err(SqlError::server(format!(
                        "its input has more partitions than when the query was created ({have}), over which its \
                         state is split; create the query again to split its state anew"
                    )));
                }
                Some(_) => {}
            }
            let dir = self.state_dir.clone().expect("split queries keep their state in files");
            restored = Some(q.open_state(&dir, &*self.topics)?);
        }
        let own = self.progress.get(&task.name()).cloned();
        q.set_task_positions(p, own.as_deref().unwrap_or(&start));
        self.instances.insert(task.clone(), q);
        Ok(restored)
    }

    /// For an owning task of a split join: per input, whether a repartition task of that
    /// input running here has not sent everything it can read yet (its last step did not
    /// reach the end of its partition), so the owning task waits for it. Repartition tasks on
    /// other servers are not waited for. `None` for other tasks.
    pub(super) fn upstream_pending(&self, task: &Task) -> Option<Vec<bool>> {
        let q = self.instances.get(task)?;
        if matches!(task.stage, Stage::Repartition(_)) || q.rights.is_empty() {
            return None;
        }
        // Which join level the task is, and so which tasks feed each of its inputs: its left
        // input comes from the first input's repartition tasks or the previous level's tasks,
        // its right input `j` from the repartition tasks of input `first stage + j`.
        let template = self.engine.queries.get(&task.query)?;
        let (levels, _) = template.join_levels();
        let level = match task.stage {
            Stage::Join(l) => l,
            _ => levels.len() - 1,
        };
        let first_stage = levels.get(level)?.start;
        let mut pending = vec![false; q.rights.len() + 1];
        let first = Task { query: task.query.clone(), stage: Stage::Repartition(0), partition: None };
        for (t, upstream) in self.instances.range(first..).take_while(|(t, _)| t.query == task.query) {
            let input = match t.stage {
                Stage::Repartition(0) if level == 0 => 0,
                Stage::Repartition(i) if i > first_stage && i <= first_stage + q.rights.len() => i - first_stage,
                Stage::Join(l) if l + 1 == level => 0,
                _ => continue,
            };
            pending[input] |= !upstream.caught_up;
        }
        Some(pending)
    }

    /// Deletes from the repartition topics what this server's owning tasks committed past
    /// (their recorded progress): those records are in their state and changelog now.
    pub(super) fn purge_repartition_topics(&mut self) {
        self.purged = Instant::now();
        for (task, q) in &self.instances {
            let (Stage::Main | Stage::Join(_), Some(p)) = (task.stage, task.partition) else { continue };
            let Some(progress) = self.progress.get(&task.name()) else { continue };
            let inputs = std::iter::once(&q.input).chain(&q.rights);
            for (src, at) in inputs.zip(progress) {
                let (topic, Some(&at)) = (&src.topic, at.first()) else { continue };
                if !is_repartition_topic(topic, &task.query) {
                    continue;
                }
                if let Err(e) = self.topics.delete_before(topic, p, at) {
                    tracing::warn!(task = %task.name(), error = %e, "could not purge the repartition topic");
                }
            }
        }
    }

    /// Stops running `task` here (between steps: what it did is committed); the query's state
    /// leaves memory with its last task.
    fn release(&mut self, task: &Task) {
        self.running.remove(task);
        tracing::debug!(task = %task.name(), "task handed over to another server");
        if self.instances.contains_key(task) {
            self.drop_instance(task);
            return;
        }
        if self.running.iter().any(|t| t.query == task.query) {
            return;
        }
        if let Some(q) = self.engine.queries.get_mut(&task.query) {
            if let Err(e) = q.release_state() {
                tracing::warn!(query = %task.query, error = %e, "could not sync the query's state file");
            }
            tracing::info!(query = %task.query, "query handed over to other servers");
        }
    }

    /// Leaves the placement group (at a clean stop): the other servers take this one's
    /// queries at once.
    pub(super) fn leave_placement(&mut self) {
        let Some(p) = self.placement.as_mut() else { return };
        if p.member.epoch > 0 {
            if let Err(e) = self.topics.leave(PLACEMENT_GROUP, &p.member) {
                tracing::debug!(error = %e, "leaving the SQL servers' group");
            }
        }
        p.owned.clear();
    }

    /// This server's part (`GET /sql/placement`): its member id and slots, the queries it runs
    /// (some of their tasks, or all) and the tasks.
    pub fn placement_json(&self) -> Json {
        let (member, slots) = match &self.placement {
            Some(p) => (Json::from(p.member.id.clone()), json!(p.owned)),
            None => (Json::Null, Json::Null),
        };
        let queries: BTreeSet<&str> = self.running.iter().map(|t| t.query.as_str()).collect();
        let tasks: Vec<String> = self.running.iter().map(Task::name).collect();
        json!({ "member": member, "slots": slots, "running": queries, "tasks": tasks })
    }
}

/// How many join levels of a `Split::Levels` query send their rows on (every level but the
/// last, and the last too when the aggregation is apart).
fn sending_levels(q: &freshet_sql::query::Query) -> usize {
    let (levels, apart) = q.join_levels();
    levels.len() - 1 + usize::from(apart)
}

/// The topics a task of join level `level` of a `Split::Levels` query reads: its left input
/// (the first input's repartition topic, or the previous level's joined rows), then the
/// repartition topics of its stages' right inputs.
fn level_topics(q: &freshet_sql::query::Query, level: usize) -> Vec<String> {
    let range = q.join_levels().0[level].clone();
    let left = if level == 0 { repartition_topic(&q.id, 0) } else { joined_topic(&q.id, level) };
    std::iter::once(left).chain(range.map(|stage| repartition_topic(&q.id, stage + 1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_in_range() {
        for id in ["CSAS_A_0", "CTAS_TOTALS_1", "INSERTQUERY_X_2"] {
            let s = slot(id);
            assert!((0..SQL_PLACEMENT_SLOTS).contains(&s));
            assert_eq!(s, slot(id));
        }
        // Kafka's default partitioner, so any Kafka tool computes the same slot (the
        // external-cluster test relies on these).
        assert_eq!(slot("CSAS_A_0"), partition_for_key(b"CSAS_A_0", SQL_PLACEMENT_SLOTS));
        let slots: Vec<i32> = (0..8).map(|i| slot(&format!("CSAS_OUT{i}_{i}#0"))).collect();
        assert_eq!(slots, [13, 0, 5, 9, 12, 9, 3, 11]);
        let slots: Vec<i32> = (0..4).map(|p| slot(&format!("CSAS_WIDE_0#{p}"))).collect();
        assert_eq!(slots, [5, 10, 11, 5]);
        let names = (0..4).flat_map(|p| [format!("CTAS_PER_MOD_0#r{p}"), format!("CTAS_PER_MOD_0#{p}")]);
        let slots: Vec<i32> = names.map(|n| slot(&n)).collect();
        assert_eq!(slots, [14, 8, 2, 15, 14, 0, 14, 14]);
    }
}
