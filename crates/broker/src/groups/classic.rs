//! A consumer group of the classic protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup),
//! as a state machine driven by requests and by the clock.
//!
//! ```text
//!            join                   all joined / deadline        leader's SyncGroup
//!  Empty ──────────▶ PreparingRebalance ──────────▶ CompletingRebalance ──────────▶ Stable
//!    ▲                  ▲        │ no members left         │ member joins, leaves,   │
//!    └──────────────────┼────────┘                         │ or the sync times out   │
//!                       └──────────────────────────────────┴─────────────────────────┘
//! ```
//!
//! Requests that must wait (JoinGroup until the rebalance completes, SyncGroup until the
//! leader's assignment arrives) leave a oneshot sender in their member; the transitions answer
//! them. Nothing here blocks or sleeps: time comes in as `now`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Group settings from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// How long a new group waits for more members before its first rebalance completes.
    pub initial_rebalance_delay: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(1_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a member without an id first gets one (MEMBER_ID_REQUIRED) and joins with it.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, Default)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResponse {
    fn error(e: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse { error: Some(e), generation: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, Default)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(e: ResponseError) -> SyncResponse {
        SyncResponse { error: Some(e), ..Default::default() }
    }
}

/// An answer now, or later through the receiver.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    heartbeat_deadline: Instant,
    join: Option<oneshot::Sender<JoinResponse>>,
    sync: Option<oneshot::Sender<SyncResponse>>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

pub struct ClassicGroup {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    initial_deadline: Option<Instant>,
    sync_deadline: Option<Instant>,
}

fn new_member_id(client_id: &str) -> String {
    format!("{}-{}", if client_id.is_empty() { "member" } else { client_id }, uuid::Uuid::new_v4())
}

impl ClassicGroup {
    pub fn new(id: &str) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_deadline: None,
            sync_deadline: None,
        }
    }

    /// Whether a member with these protocols could join (a protocol all members support).
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| &p == n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((_, vote)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == vote) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; ties go to the first candidate (in the first member's order).
        let best = votes.iter().map(|v| v.0).max()?;
        votes.into_iter().find(|v| v.0 == best).map(|v| v.1.clone())
    }

    fn response_for(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            vec![]
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
            members,
        }
    }

    fn add_member(&mut self, id: String, req: &JoinRequest, now: Instant) {
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                heartbeat_deadline: now + req.session_timeout,
                join: None,
                sync: None,
            },
        );
    }

    /// Handles JoinGroup.
    pub fn join(&mut self, req: JoinRequest, config: &GroupConfig, now: Instant) -> Reply<JoinResponse> {
        let fail = |e| Reply::Now(JoinResponse::error(e, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if req.session_timeout < config.min_session_timeout || req.session_timeout > config.max_session_timeout {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if req.member_id.is_empty() {
            let new_id = new_member_id(&req.client_id);
            if let Some(instance) = req.instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.replace_static_member(old_id, new_id, &req, now, config);
                }
                self.add_member(new_id.clone(), &req, now);
                return self.join_and_wait(&new_id, now, config);
            }
            if req.require_known_member_id {
                // KIP-394: the member retries with this id, so a lost response leaves no ghost.
                self.pending.insert(new_id.clone(), now + req.session_timeout);
                return Reply::Now(JoinResponse::error(ResponseError::MemberIdRequired, &new_id));
            }
            self.add_member(new_id.clone(), &req, now);
            return self.join_and_wait(&new_id, now, config);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member(id.clone(), &req, now);
            return self.join_and_wait(&id, now, config);
        }
        let Some(member) = self.members.get_mut(&req.member_id) else {
            if req.instance_id.as_ref().is_some_and(|i| self.static_members.contains_key(i)) {
                return fail(ResponseError::FencedInstanceId);
            }
            return fail(ResponseError::UnknownMemberId);
        };
        if member.instance_id != req.instance_id {
            return fail(ResponseError::FencedInstanceId);
        }
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.heartbeat_deadline = now + req.session_timeout;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance if !changed => Reply::Now(self.response_for(&req.member_id)),
            GroupState::Stable if !changed && !is_leader => Reply::Now(self.response_for(&req.member_id)),
            _ => self.join_and_wait(&req.member_id.clone(), now, config),
        }
    }

    /// A static member came back without its member id: it takes over its old place.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        req: &JoinRequest,
        now: Instant,
        config: &GroupConfig,
    ) -> Reply<JoinResponse> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members.remove(req.instance_id.as_deref().unwrap_or_default());
            self.add_member(new_id.clone(), req, now);
            return Reply::Now(JoinResponse::error(ResponseError::UnknownMemberId, &new_id));
        };
        // The old incarnation is fenced.
        if let Some(j) = member.join.take() {
            let _ = j.send(JoinResponse::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(s) = member.sync.take() {
            let _ = s.send(SyncResponse::error(ResponseError::FencedInstanceId));
        }
        let changed = member.protocols != req.protocols;
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols.clone();
        member.heartbeat_deadline = now + req.session_timeout;
        self.members.insert(new_id.clone(), member);
        self.static_members.insert(req.instance_id.clone().expect("static"), new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if !changed => {
                // KIP-345: no rebalance. A returning leader keeps the current assignment.
                let mut r = self.response_for(&new_id);
                r.skip_assignment = self.leader.as_deref() == Some(new_id.as_str());
                Reply::Now(r)
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                self.members.get_mut(&new_id).expect("inserted").join = Some(tx);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now, config);
                }
                Reply::Later(rx)
            }
        }
    }

    fn join_and_wait(&mut self, member_id: &str, now: Instant, config: &GroupConfig) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let member = self.members.get_mut(member_id).expect("member exists");
        if let Some(old) = member.join.replace(tx) {
            // A retried JoinGroup replaces the one still waiting.
            let _ = old.send(JoinResponse::error(ResponseError::UnknownMemberId, member_id));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, config);
        } else if let Some(initial) = self.initial_deadline.as_mut() {
            // Each new member of a new group extends the initial delay, up to the rebalance deadline.
            let limit = self.rebalance_deadline.unwrap_or(now);
            *initial = (now + config.initial_rebalance_delay).min(limit);
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::ZERO)
    }

    fn prepare_rebalance(&mut self, now: Instant, config: &GroupConfig) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(s) = m.sync.take() {
                    let _ = s.send(SyncResponse::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let was_new = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let deadline = now + self.max_rebalance_timeout();
        self.rebalance_deadline = Some(deadline);
        self.sync_deadline = None;
        self.initial_deadline = was_new.then(|| (now + config.initial_rebalance_delay).min(deadline));
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_deadline.is_some_and(|d| now < d) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some()) && self.pending.is_empty();
        if all_joined || self.rebalance_deadline.is_some_and(|d| now >= d) {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self.members.values().filter(|m| m.join.is_none()).map(|m| m.id.clone()).collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.initial_deadline = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.response_for(&id);
            let member = self.members.get_mut(&id).expect("member");
            member.assignment = Bytes::new();
            member.heartbeat_deadline = now + member.session_timeout;
            if let Some(j) = member.join.take() {
                let _ = j.send(response);
            }
        }
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let mut m = self.members.remove(id)?;
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(j) = m.join.take() {
            let _ = j.send(JoinResponse::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(s) = m.sync.take() {
            let _ = s.send(SyncResponse::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// After members left or expired: rebalance, or finish one in progress.
    fn on_members_removed(&mut self, now: Instant, config: &GroupConfig) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.prepare_rebalance(now, config);
                    self.initial_deadline = None;
                    self.complete_join(now);
                } else {
                    self.prepare_rebalance(now, config);
                    self.initial_deadline = None;
                }
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {}
        }
        self.maybe_complete_join(now);
    }

    /// Checks a member's identity for SyncGroup, Heartbeat and OffsetCommit.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(id) if id == member_id => {}
                Some(_) => return Err(ResponseError::FencedInstanceId),
                None => return Err(ResponseError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncResponse> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(SyncResponse::error(e));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return Reply::Now(SyncResponse::error(ResponseError::InconsistentGroupProtocol));
        }
        let answer = |g: &ClassicGroup, assignment: Bytes| SyncResponse {
            error: None,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        match self.state {
            GroupState::PreparingRebalance => Reply::Now(SyncResponse::error(ResponseError::RebalanceInProgress)),
            GroupState::Stable => {
                let assignment = self.members[member_id].assignment.clone();
                Reply::Now(answer(self, assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let member = self.members.get_mut(member_id).expect("checked");
                member.sync = Some(tx);
                member.heartbeat_deadline = now + member.session_timeout;
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let assignment = self.members[&id].assignment.clone();
                        let response = answer(self, assignment);
                        if let Some(s) = self.members.get_mut(&id).expect("member").sync.take() {
                            let _ = s.send(response);
                        }
                    }
                }
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(SyncResponse::error(ResponseError::UnknownMemberId)),
        }
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Option<ResponseError> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Some(e);
        }
        let member = self.members.get_mut(member_id).expect("checked");
        member.heartbeat_deadline = now + member.session_timeout;
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            _ => None,
        }
    }

    /// Handles LeaveGroup for one member, by member id or (static) instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        config: &GroupConfig,
    ) -> Option<ResponseError> {
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return None;
        }
        if self.remove_member(&id).is_none() {
            return Some(ResponseError::UnknownMemberId);
        }
        self.on_members_removed(now, config);
        None
    }

    /// Expires members whose session ran out, finishes rebalances whose time is up.
    pub fn tick(&mut self, now: Instant, config: &GroupConfig) {
        self.pending.retain(|_, deadline| *deadline > now);
        let waiting_in_join = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline <= now && !(waiting_in_join && m.join.is_some()))
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.on_members_removed(now, config);
        }
        if self.state == GroupState::CompletingRebalance && self.sync_deadline.is_some_and(|d| now >= d) {
            // The leader never sent the assignment: start over.
            tracing::info!(group = %self.id, "no assignment from the leader in time; rebalancing");
            let leader = self.leader.clone();
            if let Some(l) = leader {
                self.remove_member(&l);
            }
            self.on_members_removed(now, config);
        }
        self.maybe_complete_join(now);
    }

    /// Whether the group has no members and nothing pending.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Subscribed topics of the members, when the protocol is "consumer" (to refuse OffsetDelete).
    pub fn subscribed_topics(&self) -> Vec<String> {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics = Vec::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for m in self.members.values() {
            let meta = m.metadata(&protocol);
            if let Some(list) = decode_subscription_topics(&meta) {
                topics.extend(list);
            }
        }
        topics.sort();
        topics.dedup();
        topics
    }

    /// Marks the group deleted: waiters get an error.
    pub fn kill(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            if let Some(mut m) = self.members.remove(&id) {
                if let Some(j) = m.join.take() {
                    let _ = j.send(JoinResponse::error(ResponseError::CoordinatorNotAvailable, &id));
                }
                if let Some(s) = m.sync.take() {
                    let _ = s.send(SyncResponse::error(ResponseError::CoordinatorNotAvailable));
                }
            }
        }
        self.state = GroupState::Dead;
    }
}

/// The topics of a consumer protocol subscription (version, then an array of topic strings).
fn decode_subscription_topics(meta: &[u8]) -> Option<Vec<String>> {
    let mut buf = meta.get(2..)?;
    let count = i32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    buf = &buf[4..];
    let mut out = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(buf.get(..2)?.try_into().ok()?) as usize;
        out.push(String::from_utf8(buf.get(2..2 + len)?.to_vec()).ok()?);
        buf = &buf[2 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            require_known_member_id: true,
        }
    }

    fn now_reply<T>(r: Reply<T>) -> T {
        match r {
            Reply::Now(t) => t,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
        match r {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected to wait"),
        }
    }

    fn config() -> GroupConfig {
        GroupConfig { initial_rebalance_delay: Duration::from_millis(100), ..GroupConfig::default() }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and waiting join.
    fn join_new(g: &mut ClassicGroup, protocols: &[&str], now: Instant) -> (String, oneshot::Receiver<JoinResponse>) {
        let first = now_reply(g.join(req("", protocols), &config(), now));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let id = first.member_id;
        let rx = later(g.join(req(&id, protocols), &config(), now));
        (id, rx)
    }

    #[test]
    fn two_members_form_a_group_after_the_initial_delay() {
        let t0 = Instant::now();
        let mut g = ClassicGroup::new("g");
        let (a, mut ra) = join_new(&mut g, &["range", "roundrobin"], t0);
        let (b, mut rb) = join_new(&mut g, &["roundrobin", "range"], t0 + Duration::from_millis(10));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(ra.try_recv().is_err(), "the initial delay holds the first rebalance");
        g.tick(t0 + Duration::from_millis(200), &config());
        let ja = ra.try_recv().unwrap();
        let jb = rb.try_recv().unwrap();
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.leader, jb.leader);
        assert_eq!(ja.protocol_name, jb.protocol_name);
        assert!(matches!(ja.protocol_name.as_deref(), Some("range" | "roundrobin")));
        let (leader, follower) = if ja.leader == a { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        let leader_join = if leader == a { &ja } else { &jb };
        assert_eq!(leader_join.members.len(), 2);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        // The follower syncs first and waits; the leader's assignment releases both.
        let mut rf = later(g.sync(&follower, None, 1, None, None, vec![], t0));
        let assignments =
            vec![(leader.clone(), Bytes::from_static(b"L")), (follower.clone(), Bytes::from_static(b"F"))];
        let chosen = ja.protocol_name.clone();
        let mut rl = later(g.sync(&leader, None, 1, Some("consumer"), chosen.as_deref(), assignments, t0));
        assert_eq!(rf.try_recv().unwrap().assignment, Bytes::from_static(b"F"));
        assert_eq!(rl.try_recv().unwrap().assignment, Bytes::from_static(b"L"));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&follower, None, 1, t0), None);
        assert_eq!(g.heartbeat(&follower, None, 0, t0), Some(ResponseError::IllegalGeneration));
        assert_eq!(g.heartbeat("nobody", None, 1, t0), Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_member_that_stops_heartbeating_is_removed_and_the_rest_rebalance() {
        let t0 = Instant::now();
        let mut g = ClassicGroup::new("g");
        let (a, _ra) = join_new(&mut g, &["range"], t0);
        let (b, _rb) = join_new(&mut g, &["range"], t0);
        g.tick(t0 + Duration::from_millis(150), &config());
        let leader = g.leader.clone().unwrap();
        let _ = g.sync(&leader, None, 1, None, None, vec![], t0);
        assert_eq!(g.state, GroupState::Stable);
        let survivor = if leader == a { b.clone() } else { a.clone() };
        // Only the survivor heartbeats.
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(g.heartbeat(&survivor, None, 1, t1), None);
        g.tick(t0 + Duration::from_secs(11), &config());
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&survivor, None, 1, t0 + Duration::from_secs(11)),
            Some(ResponseError::RebalanceInProgress)
        );
        let mut r = later(g.join(req(&survivor, &["range"]), &config(), t0 + Duration::from_secs(11)));
        let j = r.try_recv().unwrap();
        assert_eq!((j.generation, j.leader.as_str()), (2, survivor.as_str()));
    }

    #[test]
    fn leaving_last_member_empties_the_group() {
        let t0 = Instant::now();
        let mut g = ClassicGroup::new("g");
        let (a, _ra) = join_new(&mut g, &["range"], t0);
        g.tick(t0 + Duration::from_millis(150), &config());
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.leave(&a, None, t0, &config()), None);
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.is_empty());
        assert_eq!(g.leave(&a, None, t0, &config()), Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn incompatible_protocols_and_bad_timeouts_are_refused() {
        let t0 = Instant::now();
        let mut g = ClassicGroup::new("g");
        let (_a, _ra) = join_new(&mut g, &["range"], t0);
        let r = now_reply(g.join(req("", &["sticky"]), &config(), t0));
        assert_eq!(r.error, Some(ResponseError::InconsistentGroupProtocol));
        let mut bad = req("", &["range"]);
        bad.session_timeout = Duration::from_millis(10);
        assert_eq!(now_reply(g.join(bad, &config(), t0)).error, Some(ResponseError::InvalidSessionTimeout));
        assert_eq!(
            now_reply(g.join(req("ghost", &["range"]), &config(), t0)).error,
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance() {
        let t0 = Instant::now();
        let mut g = ClassicGroup::new("g");
        let mut r = req("", &["range"]);
        r.instance_id = Some("worker-1".into());
        let mut rx = later(g.join(r.clone(), &config(), t0));
        g.tick(t0 + Duration::from_millis(150), &config());
        let j = rx.try_recv().unwrap();
        let _ = g.sync(
            &j.member_id,
            Some("worker-1"),
            1,
            None,
            None,
            vec![(j.member_id.clone(), Bytes::from_static(b"A"))],
            t0,
        );
        assert_eq!(g.state, GroupState::Stable);
        // The process restarts and joins again with no member id but the same instance id.
        let again = now_reply(g.join(r, &config(), t0 + Duration::from_secs(1)));
        assert_eq!(again.error, None);
        assert_eq!(again.generation, 1, "no new generation");
        assert!(again.skip_assignment);
        assert_ne!(again.member_id, j.member_id);
        assert_eq!(g.state, GroupState::Stable);
        // The old incarnation is fenced.
        assert_eq!(g.heartbeat(&j.member_id, Some("worker-1"), 1, t0), Some(ResponseError::FencedInstanceId));
        let s = now_reply(g.sync(&again.member_id, Some("worker-1"), 1, None, None, vec![], t0));
        assert_eq!(s.assignment, Bytes::from_static(b"A"));
    }

    #[test]
    fn subscription_topics_are_read_from_metadata() {
        // version 0, topics ["a", "bc"], no user data
        let meta = [0u8, 0, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0, 0, 0, 0];
        assert_eq!(decode_subscription_topics(&meta), Some(vec!["a".to_string(), "bc".to_string()]));
    }
}
