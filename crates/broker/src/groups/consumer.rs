//! A consumer group of the next-generation protocol (KIP-848): members send
//! ConsumerGroupHeartbeat; the broker computes the assignment and hands it out incrementally.
//!
//! Every membership or subscription change bumps the *group epoch* and recomputes the *target
//! assignment*. Each member then converges on its target: partitions it must give up are
//! revoked first (the member keeps its epoch until its heartbeat shows they are gone), and
//! partitions it gains are handed over only once no other member owns them, so a partition is
//! never consumed by two members at once. Time comes in as `now`; nothing here blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Settings of consumer-protocol groups.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerGroupConfig {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig { session_timeout: Duration::from_secs(45), heartbeat_interval: Duration::from_secs(1) }
    }
}

/// What the broker knows of a topic when it computes assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicShape {
    pub id: Uuid,
    pub partitions: i32,
}

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout: Option<Duration>,
    pub subscribed: Option<Vec<String>>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatAnswer {
    pub error: Option<(ResponseError, String)>,
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Option<Assignment>,
}

impl HeartbeatAnswer {
    fn error(e: ResponseError, why: impl Into<String>) -> HeartbeatAnswer {
        HeartbeatAnswer { error: Some((e, why.into())), ..Default::default() }
    }
}

#[derive(Debug)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    pub rebalance_timeout: Duration,
    pub subscribed: Vec<String>,
    pub assignor: Option<String>,
    /// What the member has been given and may own.
    pub assigned: Assignment,
    /// What it must give up before others get it.
    pub revoking: Assignment,
    session_deadline: Instant,
    revocation_deadline: Option<Instant>,
}

pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: HashMap<String, Assignment>,
    /// The topics (and their sizes) the target was computed from.
    shapes: BTreeMap<String, TopicShape>,
    static_members: HashMap<String, String>,
    pub assignor: String,
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = ps.iter().filter(|p| !b.get(t).is_some_and(|q| q.contains(p))).copied().collect();
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(q) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(q).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

fn union(a: &mut Assignment, b: &Assignment) {
    for (t, ps) in b {
        a.entry(*t).or_default().extend(ps);
    }
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: HashMap::new(),
            shapes: BTreeMap::new(),
            static_members: HashMap::new(),
            assignor: "uniform".into(),
        }
    }

    /// The state name DescribeGroups / ConsumerGroupDescribe show.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch != self.epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty()) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.subscribed.iter().cloned()).collect()
    }

    /// Handles one heartbeat. `shapes` resolves topic names to ids and partition counts.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        shapes: &dyn Fn(&str) -> Option<TopicShape>,
        config: &ConsumerGroupConfig,
        now: Instant,
    ) -> HeartbeatAnswer {
        if let Some(a) = &hb.assignor {
            if a != "uniform" && a != "range" {
                return HeartbeatAnswer::error(
                    ResponseError::UnsupportedAssignor,
                    format!("assignor '{a}' is not one of uniform, range"),
                );
            }
        }
        let member_id = match hb.member_epoch {
            0 => {
                if hb.subscribed.is_none() {
                    return HeartbeatAnswer::error(
                        ResponseError::InvalidRequest,
                        "a joining member must give its subscription",
                    );
                }
                let id =
                    if hb.member_id.is_empty() { Uuid::new_v4().simple().to_string() } else { hb.member_id.clone() };
                if let Some(instance) = &hb.instance_id {
                    if let Some(old) = self.static_members.get(instance).cloned() {
                        // A static member rejoining takes over its old place.
                        if old != id {
                            self.members.remove(&old);
                        }
                    }
                    self.static_members.insert(instance.clone(), id.clone());
                }
                // A member that rejoins (after being fenced) starts over.
                let previous = self.members.remove(&id);
                self.members.insert(
                    id.clone(),
                    ConsumerMember {
                        id: id.clone(),
                        instance_id: hb.instance_id.clone(),
                        rack_id: hb.rack_id.clone(),
                        client_id: hb.client_id.clone(),
                        client_host: hb.client_host.clone(),
                        epoch: 0,
                        previous_epoch: -1,
                        rebalance_timeout: hb.rebalance_timeout.unwrap_or(Duration::from_secs(300)),
                        subscribed: Vec::new(),
                        assignor: None,
                        assigned: Assignment::new(),
                        revoking: previous.map(|p| p.assigned).unwrap_or_default(),
                        session_deadline: now + config.session_timeout,
                        revocation_deadline: None,
                    },
                );
                self.epoch += 1;
                id
            }
            -1 | -2 => {
                let Some(m) = self.members.remove(&hb.member_id) else {
                    return HeartbeatAnswer::error(ResponseError::UnknownMemberId, "unknown member");
                };
                if let Some(instance) = &m.instance_id {
                    self.static_members.remove(instance);
                }
                self.epoch += 1;
                self.compute_target(shapes);
                return HeartbeatAnswer {
                    error: None,
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    assignment: None,
                };
            }
            epoch => {
                let Some(m) = self.members.get(&hb.member_id) else {
                    return HeartbeatAnswer::error(
                        ResponseError::UnknownMemberId,
                        "unknown member; rejoin with epoch 0",
                    );
                };
                // A member one epoch behind may still be catching up with our last answer.
                let tolerable =
                    epoch == m.previous_epoch && hb.owned.as_ref().is_none_or(|o| minus(o, &m.assigned).is_empty());
                if epoch != m.epoch && !tolerable {
                    return HeartbeatAnswer::error(
                        ResponseError::FencedMemberEpoch,
                        format!("member epoch {epoch} is not the current {}", m.epoch),
                    );
                }
                hb.member_id.clone()
            }
        };
        let member = self.members.get_mut(&member_id).expect("member exists");
        member.session_deadline = now + config.session_timeout;
        if let Some(t) = hb.rebalance_timeout {
            member.rebalance_timeout = t;
        }
        let mut changed = false;
        if let Some(mut topics) = hb.subscribed.clone() {
            topics.sort();
            topics.dedup();
            if topics != member.subscribed {
                member.subscribed = topics;
                changed = true;
            }
        }
        if hb.assignor.is_some() && hb.assignor != member.assignor {
            member.assignor = hb.assignor.clone();
            changed = true;
        }
        if let Some(owned) = &hb.owned {
            // Whatever the member no longer owns is released.
            member.revoking = intersect(&member.revoking, owned);
            if member.revoking.is_empty() {
                member.revocation_deadline = None;
            }
        }
        if changed && hb.member_epoch != 0 {
            self.epoch += 1;
        }
        // Topics created, deleted or grown since the target was computed also change it.
        let shapes_now: BTreeMap<String, TopicShape> =
            self.subscribed_topics().into_iter().filter_map(|t| shapes(&t).map(|s| (t, s))).collect();
        if shapes_now != self.shapes {
            if self.assignment_epoch == self.epoch {
                self.epoch += 1;
            }
            self.shapes = shapes_now;
        }
        if self.assignment_epoch != self.epoch {
            self.compute_target(shapes);
        }
        self.reconcile(&member_id, now);
        let m = &self.members[&member_id];
        HeartbeatAnswer { error: None, member_id, member_epoch: m.epoch, assignment: Some(m.assigned.clone()) }
    }

    /// Recomputes every member's target assignment for the current group epoch.
    fn compute_target(&mut self, shapes: &dyn Fn(&str) -> Option<TopicShape>) {
        self.shapes = self.subscribed_topics().into_iter().filter_map(|t| shapes(&t).map(|s| (t, s))).collect();
        self.assignor = self.members.values().find_map(|m| m.assignor.clone()).unwrap_or_else(|| "uniform".into());
        let members: Vec<&ConsumerMember> = self.members.values().collect();
        let mut target: HashMap<String, Assignment> =
            members.iter().map(|m| (m.id.clone(), Assignment::new())).collect();
        if self.assignor == "range" {
            // Per topic, contiguous ranges over the members subscribed to it, in member id order.
            for (name, shape) in &self.shapes {
                let subs: Vec<&String> =
                    members.iter().filter(|m| m.subscribed.contains(name)).map(|m| &m.id).collect();
                if subs.is_empty() {
                    continue;
                }
                let (per, extra) = (shape.partitions as usize / subs.len(), shape.partitions as usize % subs.len());
                let mut next = 0i32;
                for (i, id) in subs.iter().enumerate() {
                    let n = per + usize::from(i < extra);
                    let set: BTreeSet<i32> = (next..next + n as i32).collect();
                    next += n as i32;
                    if !set.is_empty() {
                        target.get_mut(*id).expect("member").insert(shape.id, set);
                    }
                }
            }
        } else {
            // Uniform and sticky: members keep what they had (up to an even share), then the
            // rest goes to the eligible member with the fewest partitions.
            let all: Vec<(String, Uuid, i32)> = self
                .shapes
                .iter()
                .flat_map(|(name, s)| (0..s.partitions).map(move |p| (name.clone(), s.id, p)))
                .collect();
            let eligible = |name: &str| -> Vec<&String> {
                members.iter().filter(|m| m.subscribed.iter().any(|t| t == name)).map(|m| &m.id).collect()
            };
            // An even share: every member `floor` partitions, `extra` of them one more. (A
            // ceiling for all would let early members keep everything: 4 partitions, 3
            // members, 2 + 2 + 0.)
            let n = members.len().max(1);
            let (floor, extra) = (all.len() / n, all.len() % n);
            let mut above_floor = 0;
            let mut counts: HashMap<&String, usize> = HashMap::new();
            let mut unassigned = Vec::new();
            for (name, id, p) in &all {
                let keeper = self
                    .target
                    .iter()
                    .find(|(_, a)| a.get(id).is_some_and(|s| s.contains(p)))
                    .map(|(m, _)| m)
                    .filter(|m| eligible(name).contains(m))
                    .filter(|m| {
                        let c = counts.get(*m).copied().unwrap_or(0);
                        c < floor || (c == floor && above_floor < extra)
                    });
                match keeper.and_then(|k| members.iter().map(|m| &m.id).find(|id| *id == k)) {
                    Some(k) => {
                        let c = counts.entry(k).or_default();
                        if *c == floor {
                            above_floor += 1;
                        }
                        *c += 1;
                        target.get_mut(k).expect("member").entry(*id).or_default().insert(*p);
                    }
                    None => unassigned.push((name.clone(), *id, *p)),
                }
            }
            for (name, id, p) in unassigned {
                let Some(best) =
                    eligible(&name).into_iter().min_by_key(|m| (counts.get(*m).copied().unwrap_or(0), (*m).clone()))
                else {
                    continue;
                };
                *counts.entry(best).or_default() += 1;
                target.get_mut(best).expect("member").entry(id).or_default().insert(p);
            }
        }
        self.target = target;
        self.assignment_epoch = self.epoch;
    }

    /// Moves a member towards its target (KIP-848's current assignment builder).
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        // Partitions some other member still owns or is giving up.
        let mut taken = Assignment::new();
        for (id, m) in &self.members {
            if id != member_id {
                union(&mut taken, &m.assigned);
                union(&mut taken, &m.revoking);
            }
        }
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("member exists");
        let to_revoke = minus(&m.assigned, &target);
        if !to_revoke.is_empty() {
            // Revoke first; the epoch moves once the member shows it let them go.
            m.assigned = intersect(&m.assigned, &target);
            union(&mut m.revoking, &to_revoke);
            m.revocation_deadline.get_or_insert(now + m.rebalance_timeout);
            return;
        }
        if !m.revoking.is_empty() {
            return;
        }
        let wanted = minus(&target, &m.assigned);
        let free = minus(&wanted, &taken);
        union(&mut m.assigned, &free);
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
    }

    /// Removes members whose session expired or who did not revoke in time.
    pub fn tick(&mut self, shapes: &dyn Fn(&str) -> Option<TopicShape>, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "consumer group member expired");
            if let Some(m) = self.members.remove(&id) {
                if let Some(instance) = m.instance_id {
                    self.static_members.remove(&instance);
                }
            }
        }
        self.epoch += 1;
        self.compute_target(shapes);
    }

    /// Checks a member's epoch for OffsetCommit / OffsetFetch.
    pub fn check_member(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        match self.members.get(member_id) {
            None => Err(ResponseError::UnknownMemberId),
            Some(m) if epoch > m.epoch => Err(ResponseError::FencedMemberEpoch),
            Some(m) if epoch < m.epoch => Err(ResponseError::StaleMemberEpoch),
            Some(_) => Ok(()),
        }
    }

    pub fn total_assigned(&self) -> usize {
        self.members.values().map(|m| count(&m.assigned)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(t: &str) -> Option<TopicShape> {
        match t {
            "a" => Some(TopicShape { id: Uuid::from_u128(1), partitions: 6 }),
            "b" => Some(TopicShape { id: Uuid::from_u128(2), partitions: 2 }),
            _ => None,
        }
    }

    fn join(g: &mut ConsumerGroup, id: &str, topics: &[&str], now: Instant) -> HeartbeatAnswer {
        g.heartbeat(
            Heartbeat {
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout: Some(Duration::from_secs(30)),
                subscribed: Some(topics.iter().map(|t| t.to_string()).collect()),
                owned: Some(Assignment::new()),
                ..Default::default()
            },
            &shapes,
            &ConsumerGroupConfig::default(),
            now,
        )
    }

    fn beat(g: &mut ConsumerGroup, id: &str, epoch: i32, owned: &Assignment, now: Instant) -> HeartbeatAnswer {
        g.heartbeat(
            Heartbeat { member_id: id.into(), member_epoch: epoch, owned: Some(owned.clone()), ..Default::default() },
            &shapes,
            &ConsumerGroupConfig::default(),
            now,
        )
    }

    #[test]
    fn partitions_move_only_after_they_are_revoked() {
        let t = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let a = join(&mut g, "A", &["a"], t);
        assert_eq!((a.member_epoch, count(a.assignment.as_ref().unwrap())), (1, 6), "a lone member gets everything");
        let a_owned = a.assignment.unwrap();
        let b = join(&mut g, "B", &["a"], t);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(count(b.assignment.as_ref().unwrap()), 0, "A still owns everything");
        // A's next heartbeat tells it to revoke three partitions; its epoch stays.
        let a2 = beat(&mut g, "A", 1, &a_owned, t);
        let a_kept = a2.assignment.unwrap();
        assert_eq!((a2.member_epoch, count(&a_kept)), (1, 3));
        // B still waits while A has not confirmed.
        let b2 = beat(&mut g, "B", 2, &Assignment::new(), t);
        assert_eq!(count(b2.assignment.as_ref().unwrap()), 0);
        // A confirms; it moves to epoch 2 and B gets the released partitions.
        let a3 = beat(&mut g, "A", 1, &a_kept, t);
        assert_eq!(a3.member_epoch, 2);
        let b3 = beat(&mut g, "B", 2, &Assignment::new(), t);
        let b_owned = b3.assignment.unwrap();
        assert_eq!(count(&b_owned), 3);
        assert!(intersect(&a_kept, &b_owned).is_empty(), "never owned twice");
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn a_third_member_gets_its_share() {
        // Topic "a" has 6 partitions; with 4 members the target is 2 + 2 + 1 + 1 (an earlier
        // version let the first members keep 2 each up to a ceiling: 2 + 2 + 2 + 0).
        let t = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let mut owned: BTreeMap<String, Assignment> = BTreeMap::new();
        for (i, id) in ["A", "B", "C", "D"].into_iter().enumerate() {
            join(&mut g, id, &["a"], t);
            // Let every member converge (revoke, confirm, take) before the next joins.
            for _ in 0..4 {
                for m in ["A", "B", "C", "D"].iter().take(i + 1) {
                    let epoch = g.members[*m].epoch;
                    let mine = owned.get(*m).cloned().unwrap_or_default();
                    let r = beat(&mut g, m, epoch, &mine, t);
                    owned.insert(m.to_string(), r.assignment.unwrap());
                }
            }
        }
        let mut counts: Vec<usize> = owned.values().map(count).collect();
        counts.sort();
        assert_eq!(counts, [1, 1, 2, 2], "{owned:?}");
    }

    #[test]
    fn an_expired_member_leaves_its_partitions_to_the_others() {
        let t = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let a = join(&mut g, "A", &["a", "b"], t);
        let mut a_owned = a.assignment.unwrap();
        join(&mut g, "B", &["a", "b"], t);
        let r = beat(&mut g, "A", 1, &a_owned, t);
        a_owned = r.assignment.unwrap();
        beat(&mut g, "A", 1, &a_owned, t);
        let b = beat(&mut g, "B", 2, &Assignment::new(), t);
        assert_eq!(count(b.assignment.as_ref().unwrap()), 4);
        // B stops heartbeating.
        let later = t + Duration::from_secs(46);
        let a_late = beat(&mut g, "A", 2, &a_owned, t + Duration::from_secs(40));
        assert_eq!(a_late.member_epoch, 2);
        g.tick(&shapes, later);
        assert_eq!(g.members.len(), 1);
        let a_all = beat(&mut g, "A", 2, &a_owned, later);
        assert_eq!((a_all.member_epoch, count(a_all.assignment.as_ref().unwrap())), (3, 8));
    }

    #[test]
    fn fencing_and_errors() {
        let t = Instant::now();
        let mut g = ConsumerGroup::new("g");
        join(&mut g, "A", &["a"], t);
        let r = beat(&mut g, "A", 7, &Assignment::new(), t);
        assert_eq!(r.error.unwrap().0, ResponseError::FencedMemberEpoch);
        let r = beat(&mut g, "Z", 1, &Assignment::new(), t);
        assert_eq!(r.error.unwrap().0, ResponseError::UnknownMemberId);
        let mut hb = Heartbeat { member_epoch: 0, ..Default::default() };
        let r = g.heartbeat(hb.clone(), &shapes, &ConsumerGroupConfig::default(), t);
        assert_eq!(r.error.unwrap().0, ResponseError::InvalidRequest, "no subscription");
        hb.subscribed = Some(vec!["a".into()]);
        hb.assignor = Some("magic".into());
        let r = g.heartbeat(hb, &shapes, &ConsumerGroupConfig::default(), t);
        assert_eq!(r.error.unwrap().0, ResponseError::UnsupportedAssignor);
        assert_eq!(g.check_member("A", 1), Ok(()));
        assert_eq!(g.check_member("A", 0), Err(ResponseError::StaleMemberEpoch));
        let leave = g.heartbeat(
            Heartbeat { member_id: "A".into(), member_epoch: -1, ..Default::default() },
            &shapes,
            &ConsumerGroupConfig::default(),
            t,
        );
        assert_eq!(leave.member_epoch, -1);
        assert!(g.members.is_empty());
    }

    #[test]
    fn range_assignor_gives_contiguous_ranges() {
        let t = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let mut hb = Heartbeat {
            member_id: "A".into(),
            member_epoch: 0,
            subscribed: Some(vec!["a".into()]),
            assignor: Some("range".into()),
            ..Default::default()
        };
        g.heartbeat(hb.clone(), &shapes, &ConsumerGroupConfig::default(), t);
        hb.member_id = "B".into();
        g.heartbeat(hb, &shapes, &ConsumerGroupConfig::default(), t);
        assert_eq!(g.target["A"][&Uuid::from_u128(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(g.target["B"][&Uuid::from_u128(1)], BTreeSet::from([3, 4, 5]));
    }
}
