//! Which persistent queries this SQL server runs, when several share a cluster.
//!
//! Every SQL server on a cluster (each `serve --external-kafka` process, and the embedded
//! broker's own engine) joins one consumer group, [`PLACEMENT_GROUP`], subscribed to the
//! [`PLACEMENT_TOPIC`] of `SQL_PLACEMENT_SLOTS` partitions, with the KIP-848 protocol the
//! cluster's group coordinator already speaks: no protocol of Freshet's own. A query runs on the
//! member assigned the slot (partition) its id hashes to ([`slot`], Kafka's default
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
//! Architecture invariant: a query is stepped only while it is in `SqlServer::running`, and
//! it is in there only between `acquire` (state restored, offsets at its recorded progress)
//! and `release` (stopped between steps, state synced and dropped from memory).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use freshet_common::config::TopicConfig;
use freshet_common::limits::{SQL_GROUP_HEARTBEAT_MS, SQL_PLACEMENT_SLOTS};
use freshet_common::partitioner::partition_for_key;
use freshet_common::topics::Member;
use serde_json::{json, Value as Json};

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

impl SqlServer {
    /// Whether this server is to run query `id` now.
    pub(super) fn should_run(&self, id: &str) -> bool {
        self.placement.as_ref().is_none_or(|p| p.owned.contains(&slot(id)))
    }

    /// Heartbeats in the placement group when due, then starts and stops queries to match
    /// what the group assigns this server.
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
            }
            Ok(None) => return,
            Ok(Some(assigned)) => {
                let assigned: BTreeSet<i32> = assigned.into_iter().collect();
                if assigned != p.owned {
                    tracing::info!(slots = ?assigned, "the SQL servers' group assigned this server its query slots");
                }
                // Slots given up are reported at once, so that their next owner starts soon.
                p.due = !p.owned.is_subset(&assigned) || p.member.epoch == 0;
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
        self.reconcile();
    }

    /// Starts the queries this server is to run and stops those it is not. A query a failure
    /// stopped here is stopped only here: once its slot goes to another server it is that
    /// server's to run, and it starts again here (from its changelog) if the slot comes back.
    pub(super) fn reconcile(&mut self) {
        let moved: Vec<String> = self.failed.keys().filter(|id| !self.should_run(id)).cloned().collect();
        for id in moved {
            if let Some((mut q, _)) = self.failed.remove(&id) {
                if let Err(e) = q.release_state() {
                    tracing::warn!(query = %id, error = %e, "could not sync the failed query's state file");
                }
                self.engine.queries.insert(id, q);
            }
        }
        let ids: Vec<String> = self.engine.queries.keys().cloned().collect();
        for id in &ids {
            let wanted = self.should_run(id);
            if !wanted && self.running.contains(id) {
                self.release(id);
            } else if wanted && !self.running.contains(id) {
                self.acquire(id);
            }
        }
    }

    /// Starts running query `id` here: settles its last transaction, restores its state and
    /// positions it at its recorded progress. A failure stops the query (ERROR).
    pub(super) fn acquire(&mut self, id: &str) {
        let started = Instant::now();
        if !self.at_least_once.contains(id) {
            if let Err(e) = self.topics.settle_atomic(&format!("freshet-sql-{id}")) {
                tracing::warn!(query = %id, error = %e, "could not settle the query's last transaction");
            }
        }
        if let Err(e) = self.follow_progress() {
            tracing::warn!(query = %id, error = %e, "could not read the queries' progress");
        }
        match self.attach_state(id) {
            Ok(restored) => {
                let progress = self.progress.get(id).cloned();
                let Some(q) = self.engine.queries.get_mut(id) else { return };
                if let Some(p) = progress {
                    if self.state_dir.is_some() {
                        if let Some((left, rights)) = p.split_first() {
                            q.offsets = left.clone();
                            q.right_offsets = rights.to_vec();
                        }
                    } else {
                        // No state file: the state is rebuilt from the start offsets, and
                        // outputs up to the progress are not written again.
                        q.replay_until = Some(p);
                    }
                }
                tracing::info!(
                    query = %id,
                    changelog_records = restored.records,
                    rebuilt = restored.rebuilt,
                    ms = started.elapsed().as_millis() as u64,
                    "query started on this server"
                );
                self.running.insert(id.to_string());
            }
            Err(e) => self.fail_query(id, format!("restoring its state: {e}")),
        }
    }

    /// Stops running query `id` here (between steps: what it did is committed).
    pub(super) fn release(&mut self, id: &str) {
        self.running.remove(id);
        if let Some(q) = self.engine.queries.get_mut(id) {
            if let Err(e) = q.release_state() {
                tracing::warn!(query = %id, error = %e, "could not sync the query's state file");
            }
            tracing::info!(query = %id, "query handed over to another server");
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

    /// This server's part: its member id, slots and the queries it runs (`GET /sql/placement`).
    pub fn placement_json(&self) -> Json {
        let (member, slots) = match &self.placement {
            Some(p) => (Json::from(p.member.id.clone()), json!(p.owned)),
            None => (Json::Null, Json::Null),
        };
        json!({ "member": member, "slots": slots, "running": self.running })
    }
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
        let slots: Vec<i32> = (0..8).map(|i| slot(&format!("CSAS_OUT{i}_{i}"))).collect();
        assert_eq!(slots, [15, 7, 10, 12, 13, 6, 9, 1]);
    }
}
