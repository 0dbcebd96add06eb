//! The classic consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups.

use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ready, Ctx, Responder};
use crate::groups::{self, JoinRequest, JoinResponse, SyncResponse};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: Option<ResponseError>) -> i16 {
    e.map(|e| e.code()).unwrap_or(0)
}

const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

pub(super) fn find_coordinator(ctx: Ctx, req: FindCoordinatorRequest) -> Responder {
    let c = &ctx.broker.config;
    let keys: Vec<StrBytes> = if ctx.version >= 4 { req.coordinator_keys.clone() } else { vec![req.key.clone()] };
    let error_for = |key: &StrBytes| -> Option<ResponseError> {
        match req.key_type {
            GROUP_KEY | TRANSACTION_KEY if !key.is_empty() => None,
            GROUP_KEY | TRANSACTION_KEY => Some(ResponseError::InvalidRequest),
            _ => Some(ResponseError::InvalidRequest),
        }
    };
    let response = if ctx.version >= 4 {
        let coordinators = keys
            .iter()
            .map(|k| {
                let e = error_for(k);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(if e.is_some() { -1 } else { c.node_id }))
                    .with_host(s(if e.is_some() { "" } else { &c.advertised_host }))
                    .with_port(if e.is_some() { -1 } else { c.advertised_port as i32 })
                    .with_error_code(code(e))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let e = error_for(&keys[0]);
        FindCoordinatorResponse::default()
            .with_error_code(code(e))
            .with_node_id(BrokerId(if e.is_some() { -1 } else { c.node_id }))
            .with_host(s(if e.is_some() { "" } else { &c.advertised_host }))
            .with_port(if e.is_some() { -1 } else { c.advertised_port as i32 })
    };
    ready(ctx.respond(&response))
}

fn join_response(version: i16, r: JoinResponse) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(s(&id))
                .with_group_instance_id(if version >= 5 { instance.map(|i| s(&i)) } else { None })
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(code(r.error))
        .with_generation_id(r.generation)
        .with_protocol_type(if version >= 7 { r.protocol_type.map(|p| s(&p)) } else { None })
        .with_protocol_name(r.protocol_name.map(|p| s(&p)))
        .with_leader(s(&r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(&r.member_id))
        .with_members(members)
}

pub(super) fn join(ctx: Ctx, req: JoinGroupRequest) -> Responder {
    let version = ctx.version;
    if req.group_id.is_empty() {
        let r = JoinResponse { error: Some(ResponseError::InvalidGroupId), generation: -1, ..Default::default() };
        return ready(ctx.respond(&join_response(version, r)));
    }
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: ctx.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: ctx.client_host.clone(),
        session_timeout: session,
        // v0 has no rebalance timeout: the session timeout serves.
        rebalance_timeout: if version >= 1 {
            Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    match ctx.broker.groups().join(&req.group_id, join) {
        groups::Reply::Now(r) => ready(ctx.respond(&join_response(version, r))),
        groups::Reply::Later(rx) => Box::pin(async move {
            let r = rx.await.unwrap_or_else(|_| JoinResponse {
                error: Some(ResponseError::CoordinatorNotAvailable),
                generation: -1,
                ..Default::default()
            });
            ctx.respond(&join_response(version, r))
        }),
    }
}

fn sync_response(version: i16, r: SyncResponse) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(code(r.error))
        .with_protocol_type(if version >= 5 { r.protocol_type.map(|p| s(&p)) } else { None })
        .with_protocol_name(if version >= 5 { r.protocol_name.map(|p| s(&p)) } else { None })
        .with_assignment(r.assignment)
}

pub(super) fn sync(ctx: Ctx, req: SyncGroupRequest) -> Responder {
    let version = ctx.version;
    let assignments = req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
    let reply = ctx.broker.groups().sync(
        &req.group_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
        req.protocol_type.as_deref(),
        req.protocol_name.as_deref(),
        assignments,
    );
    match reply {
        groups::Reply::Now(r) => ready(ctx.respond(&sync_response(version, r))),
        groups::Reply::Later(rx) => Box::pin(async move {
            let r = rx.await.unwrap_or_else(|_| SyncResponse {
                error: Some(ResponseError::CoordinatorNotAvailable),
                ..Default::default()
            });
            ctx.respond(&sync_response(version, r))
        }),
    }
}

pub(super) fn heartbeat(ctx: Ctx, req: HeartbeatRequest) -> Responder {
    let e = ctx.broker.groups().heartbeat(
        &req.group_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    ready(ctx.respond(&HeartbeatResponse::default().with_error_code(code(e))))
}

pub(super) fn leave(ctx: Ctx, req: LeaveGroupRequest) -> Responder {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let response = match ctx.broker.groups().leave(&req.group_id, &members) {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(errors) if ctx.version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(errors)
                .map(|((m, i), e)| {
                    MemberResponse::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(i.as_ref().map(|i| s(i)))
                        .with_error_code(code(e))
                })
                .collect(),
        ),
        Ok(errors) => LeaveGroupResponse::default().with_error_code(code(errors[0])),
    };
    ready(ctx.respond(&response))
}

pub(super) fn describe(ctx: Ctx, req: DescribeGroupsRequest) -> Responder {
    let coordinator = ctx.broker.groups();
    let groups = req
        .groups
        .iter()
        .map(|g| {
            let d = coordinator.describe(g);
            let error = if ctx.version >= 6 && d.state == "Dead" { ResponseError::GroupIdNotFound.code() } else { 0 };
            DescribedGroup::default()
                .with_error_code(error)
                .with_group_id(g.clone())
                .with_group_state(s(d.state))
                .with_protocol_type(s(&d.protocol_type))
                .with_protocol_data(s(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_group_instance_id(if ctx.version >= 4 {
                                    m.instance_id.map(|i| s(&i))
                                } else {
                                    None
                                })
                                .with_client_id(s(&m.client_id))
                                .with_client_host(s(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    ready(ctx.respond(&DescribeGroupsResponse::default().with_groups(groups)))
}

pub(super) fn list(ctx: Ctx, req: ListGroupsRequest) -> Responder {
    let groups = ctx
        .broker
        .groups()
        .list()
        .into_iter()
        .filter(|(_, _, state, _)| {
            ctx.version < 4
                || req.states_filter.is_empty()
                || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(state))
        })
        .filter(|(_, _, _, kind)| {
            ctx.version < 5
                || req.types_filter.is_empty()
                || req.types_filter.iter().any(|t| t.eq_ignore_ascii_case(kind))
        })
        .map(|(id, protocol_type, state, kind)| {
            ListedGroup::default()
                .with_group_id(GroupId(s(&id)))
                .with_protocol_type(s(&protocol_type))
                .with_group_state(if ctx.version >= 4 { s(state) } else { StrBytes::default() })
                .with_group_type(if ctx.version >= 5 { s(kind) } else { StrBytes::default() })
        })
        .collect();
    ready(ctx.respond(&ListGroupsResponse::default().with_groups(groups)))
}

pub(super) fn delete(ctx: Ctx, req: DeleteGroupsRequest) -> Responder {
    Box::pin(async move {
        let mut results = Vec::with_capacity(req.groups_names.len());
        for g in &req.groups_names {
            let e = ctx.broker.groups().delete(g).await.err();
            results.push(DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(code(e)));
        }
        ctx.respond(&DeleteGroupsResponse::default().with_results(results))
    })
}

pub(super) fn consumer_heartbeat(ctx: Ctx, req: ConsumerGroupHeartbeatRequest) -> Responder {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
    let broker = ctx.broker.clone();
    let ids: std::collections::HashMap<uuid::Uuid, String> =
        broker.topics().iter().map(|t| (t.id, t.name.clone())).collect();
    let hb = groups::Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout: (req.rebalance_timeout_ms >= 0)
            .then(|| Duration::from_millis(req.rebalance_timeout_ms as u64)),
        subscribed: req.subscribed_topic_names.as_ref().map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned: req.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .filter(|tp| ids.contains_key(&tp.topic_id))
                .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
                .collect()
        }),
        client_id: ctx.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: ctx.client_host.clone(),
    };
    if req.group_id.is_empty() {
        return ready(
            ctx.respond(
                &ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(ResponseError::InvalidGroupId.code())
                    .with_error_message(Some(s("the group id is empty"))),
            ),
        );
    }
    if ctx.version >= 1 && req.member_epoch == 0 && req.member_id.is_empty() {
        return ready(
            ctx.respond(
                &ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("from version 1 the member chooses its member id"))),
            ),
        );
    }
    let shapes = |t: &str| broker.topic_shape(t);
    let answer = broker.groups().consumer_heartbeat(&req.group_id, hb, &shapes);
    let response = match answer.error {
        Some((e, why)) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(s(&why)))
            .with_member_epoch(-1),
        None => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(&answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(broker.groups().consumer_heartbeat_interval().as_millis() as i32)
            .with_assignment(answer.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, ps)| {
                            TopicPartitions::default().with_topic_id(id).with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
    };
    ready(ctx.respond(&response))
}

pub(super) fn consumer_describe(ctx: Ctx, req: ConsumerGroupDescribeRequest) -> Responder {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let names: std::collections::HashMap<uuid::Uuid, String> =
        ctx.broker.topics().iter().map(|t| (t.id, t.name.clone())).collect();
    let to_wire = |a: &groups::consumer::Assignment| {
        Assignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(TopicName(s(names.get(id).map(String::as_str).unwrap_or(""))))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .iter()
        .map(|id| {
            ctx.broker.groups().with_consumer_group(id, |g| match g {
                None => DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s("no consumer-protocol group with this id"))),
                Some(g) => DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(s(g.state()))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(s(&g.assignor))
                    .with_authorized_operations(i32::MIN)
                    .with_members(
                        g.members
                            .values()
                            .map(|m| {
                                Member::default()
                                    .with_member_id(s(&m.id))
                                    .with_instance_id(m.instance_id.as_ref().map(|i| s(i)))
                                    .with_rack_id(m.rack_id.as_ref().map(|r| s(r)))
                                    .with_member_epoch(m.epoch)
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s(&m.client_host))
                                    .with_subscribed_topic_names(m.subscribed.iter().map(|t| TopicName(s(t))).collect())
                                    .with_assignment(to_wire(&m.assigned))
                                    .with_target_assignment(to_wire(g.target.get(&m.id).unwrap_or(&Default::default())))
                            })
                            .collect(),
                    ),
            })
        })
        .collect();
    ready(ctx.respond(&ConsumerGroupDescribeResponse::default().with_groups(groups)))
}
