//! The group coordinator: consumer groups and their committed offsets.
//!
//! Freshet is every group's coordinator. Group membership lives in memory (clients rejoin after
//! a restart, as after a coordinator change in Kafka); committed offsets are durable in the
//! internal topic `__consumer_offsets` (see [`offsets`]).

pub mod classic;
pub mod consumer;
pub mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

pub use classic::{ClassicGroup, GroupConfig, GroupState, JoinRequest, JoinResponse, Reply, SyncResponse};
pub use consumer::{ConsumerGroup, ConsumerGroupConfig, Heartbeat, HeartbeatAnswer, TopicShape};
pub use offsets::{Committed, OffsetStore, TopicPartition};

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often group timers (sessions, rebalance deadlines) are checked.
pub const GROUP_TICK: Duration = Duration::from_millis(50);

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Resolves a topic name to its id and partition count.
pub type Shapes<'a> = dyn Fn(&str) -> Option<TopicShape> + Send + Sync + 'a;

// A group id belongs to the classic protocol or to the consumer protocol (KIP-848), never both.
pub struct GroupCoordinator {
    config: GroupConfig,
    consumer_config: ConsumerGroupConfig,
    classic: Mutex<HashMap<String, ClassicGroup>>,
    consumer: Mutex<HashMap<String, ConsumerGroup>>,
    pub offsets: OffsetStore,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, consumer_config: ConsumerGroupConfig, offsets: OffsetStore) -> GroupCoordinator {
        GroupCoordinator { config, consumer_config, classic: Mutex::default(), consumer: Mutex::default(), offsets }
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<String, ClassicGroup>> {
        self.classic.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn consumer_groups(&self) -> MutexGuard<'_, HashMap<String, ConsumerGroup>> {
        self.consumer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The heartbeat interval consumer-protocol members are told to keep.
    pub fn consumer_heartbeat_interval(&self) -> Duration {
        self.consumer_config.heartbeat_interval
    }

    /// ConsumerGroupHeartbeat (KIP-848).
    pub fn consumer_heartbeat(&self, group_id: &str, hb: Heartbeat, shapes: &Shapes<'_>) -> HeartbeatAnswer {
        if self.groups().get(group_id).is_some_and(|g| !g.is_empty()) {
            return HeartbeatAnswer {
                error: Some((ResponseError::GroupIdNotFound, format!("group '{group_id}' uses the classic protocol"))),
                ..Default::default()
            };
        }
        let mut groups = self.consumer_groups();
        let group = groups.entry(group_id.to_string()).or_insert_with(|| ConsumerGroup::new(group_id));
        group.heartbeat(hb, shapes, &self.consumer_config, Instant::now())
    }

    pub fn join(&self, group_id: &str, req: JoinRequest) -> Reply<JoinResponse> {
        if self.consumer_groups().get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return Reply::Now(JoinResponse {
                error: Some(ResponseError::InconsistentGroupProtocol),
                generation: -1,
                member_id: req.member_id,
                ..Default::default()
            });
        }
        let mut groups = self.groups();
        if !groups.contains_key(group_id) {
            if !req.member_id.is_empty() {
                return Reply::Now(JoinResponse {
                    error: Some(ResponseError::UnknownMemberId),
                    generation: -1,
                    member_id: req.member_id,
                    ..Default::default()
                });
            }
            groups.insert(group_id.to_string(), ClassicGroup::new(group_id));
        }
        groups.get_mut(group_id).expect("present").join(req, &self.config, Instant::now())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResponse> {
        match self.groups().get_mut(group_id) {
            Some(g) => {
                g.sync(member_id, instance_id, generation, protocol_type, protocol_name, assignments, Instant::now())
            }
            None => Reply::Now(SyncResponse { error: Some(ResponseError::UnknownMemberId), ..Default::default() }),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        match self.groups().get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => Some(ResponseError::UnknownMemberId),
        }
    }

    /// LeaveGroup for several members; returns each one's error.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut groups = self.groups();
        let Some(g) = groups.get_mut(group_id) else { return Err(ResponseError::UnknownMemberId) };
        let now = Instant::now();
        Ok(members.iter().map(|(m, i)| g.leave(m, i.as_deref(), now, &self.config)).collect())
    }

    /// Checks that a member may commit offsets for the group (OffsetCommit, TxnOffsetCommit).
    /// Commits from outside any group (generation -1, no member id) are allowed while the group
    /// has no members.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(g) = self.consumer_groups().get(group_id) {
            if generation < 0 && member_id.is_empty() {
                return if g.members.is_empty() { Ok(()) } else { Err(ResponseError::UnknownMemberId) };
            }
            return g.check_member(member_id, generation);
        }
        let groups = self.groups();
        match groups.get(group_id) {
            None if generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration),
            Some(g) if g.state == GroupState::Dead => Err(ResponseError::CoordinatorNotAvailable),
            Some(g) if generation < 0 && member_id.is_empty() => {
                if g.members.is_empty() {
                    Ok(())
                } else {
                    Err(ResponseError::UnknownMemberId)
                }
            }
            Some(g) if g.state == GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            Some(g) => g.check_member(member_id, instance_id, generation),
        }
    }

    /// DescribeGroups for one group (state Dead when it does not exist).
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        if let Some(g) = self.consumer_groups().get(group_id) {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: g.state(),
                protocol_type: "consumer".into(),
                protocol: g.assignor.clone(),
                members: g
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: Bytes::new(),
                        assignment: Bytes::new(),
                    })
                    .collect(),
            };
        }
        let groups = self.groups();
        match groups.get(group_id) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                let stable = g.state == GroupState::Stable;
                GroupDescription {
                    group_id: group_id.to_string(),
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: if stable { protocol.clone() } else { String::new() },
                    members: g
                        .members
                        .values()
                        .map(|m| MemberDescription {
                            member_id: m.id.clone(),
                            instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: if stable {
                                m.protocols
                                    .iter()
                                    .find(|(n, _)| *n == protocol)
                                    .map(|(_, b)| b.clone())
                                    .unwrap_or_default()
                            } else {
                                Bytes::new()
                            },
                            assignment: if stable { m.assignment.clone() } else { Bytes::new() },
                        })
                        .collect(),
                }
            }
            None if self.offsets.has_offsets(group_id) => GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Empty.name(),
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: vec![],
            },
            None => GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: vec![],
            },
        }
    }

    /// Every group with members or committed offsets: (id, protocol type, state, group type).
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let mut out: BTreeMap<String, (String, &'static str, &'static str)> = BTreeMap::new();
        for g in self.offsets.groups() {
            out.insert(g, ("consumer".into(), GroupState::Empty.name(), "classic"));
        }
        for (id, g) in self.consumer_groups().iter() {
            out.insert(id.clone(), ("consumer".into(), g.state(), "consumer"));
        }
        for (id, g) in self.groups().iter() {
            if g.state != GroupState::Dead {
                out.insert(
                    id.clone(),
                    (g.protocol_type.clone().unwrap_or_else(|| "consumer".into()), g.state.name(), "classic"),
                );
            }
        }
        out.into_iter().map(|(id, (t, s, k))| (id, t, s, k)).collect()
    }

    /// DeleteGroups: only a group with no members; its offsets go too.
    pub async fn delete(&self, group_id: &str) -> Result<(), ResponseError> {
        {
            let mut consumer = self.consumer_groups();
            match consumer.get(group_id) {
                Some(g) if !g.members.is_empty() => return Err(ResponseError::NonEmptyGroup),
                Some(_) => {
                    consumer.remove(group_id);
                }
                None => {}
            }
        }
        {
            let mut groups = self.groups();
            match groups.get_mut(group_id) {
                Some(g) if !g.is_empty() => return Err(ResponseError::NonEmptyGroup),
                Some(g) => {
                    g.kill();
                    groups.remove(group_id);
                }
                None if !self.offsets.has_offsets(group_id) => return Err(ResponseError::GroupIdNotFound),
                None => {}
            }
        }
        self.offsets.delete(group_id, None).await.map(|_| ())
    }

    /// Topics the group's active members subscribe to (OffsetDelete refuses those).
    pub fn subscribed_topics(&self, group_id: &str) -> Vec<String> {
        if let Some(g) = self.consumer_groups().get(group_id) {
            return g.subscribed_topics().into_iter().collect();
        }
        self.groups().get(group_id).map(|g| g.subscribed_topics()).unwrap_or_default()
    }

    /// Whether the group has members.
    pub fn is_active(&self, group_id: &str) -> bool {
        self.consumer_groups().get(group_id).is_some_and(|g| !g.members.is_empty())
            || self.groups().get(group_id).is_some_and(|g| !g.is_empty())
    }

    /// Consumer-protocol groups, for ConsumerGroupDescribe.
    pub fn with_consumer_group<T>(&self, group_id: &str, f: impl FnOnce(Option<&ConsumerGroup>) -> T) -> T {
        f(self.consumer_groups().get(group_id))
    }

    /// Runs session and rebalance timers; forgets groups with nothing left.
    pub fn tick(&self, shapes: &Shapes<'_>) {
        let now = Instant::now();
        let mut groups = self.groups();
        for g in groups.values_mut() {
            g.tick(now, &self.config);
        }
        groups.retain(|_, g| !(g.is_empty() && g.state == GroupState::Empty));
        drop(groups);
        let mut consumer = self.consumer_groups();
        for g in consumer.values_mut() {
            g.tick(shapes, now);
        }
        consumer.retain(|_, g| !g.members.is_empty());
    }

    /// Runs [`GroupCoordinator::tick`] every [`GROUP_TICK`] while the coordinator lives.
    pub fn spawn_timers(self: &Arc<Self>, shapes: Arc<Shapes<'static>>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GROUP_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(c) => c.tick(&*shapes),
                    None => return,
                }
            }
        })
    }
}
