//! `freshet group ...`: consumer groups, their members, committed offsets and lag.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use freshet_client::kafka_protocol::messages::ConsumerProtocolAssignment;
use freshet_client::kafka_protocol::protocol::Decodable;
use freshet_client::Client;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members, committed offsets and lag per partition.
    Describe { group: String },
    /// Move a group's committed offsets (the group must have no active members).
    ResetOffsets {
        group: String,
        /// Topic whose offsets to move.
        #[arg(long)]
        topic: String,
        /// To the oldest offset of every partition.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the end of every partition.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To this offset.
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// To the first record at or after this time (milliseconds since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// By this many records from the committed offset (negative: back).
        #[arg(long, group = "to", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the change (without it, only show what would change).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group (it must have no active members) and its committed offsets.
    Delete { group: String },
}

pub async fn run(command: GroupCommand, bootstrap: &str) -> Result<()> {
    let client = Client::connect(bootstrap).await.with_context(|| format!("connecting to {bootstrap}"))?;
    match command {
        GroupCommand::List => {
            for (id, protocol, state) in client.list_groups().await? {
                println!("{id}\t{protocol}\t{state}");
            }
        }
        GroupCommand::Describe { group } => describe(&client, &group).await?,
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            shift_by,
            execute,
        } => {
            let g = client.describe_group(&group).await?;
            if !g.members.is_empty() {
                bail!("group '{group}' has {} active members; stop them before resetting offsets", g.members.len());
            }
            let committed = client.committed_offsets(&group).await?;
            let info = client.topic(&topic).await.with_context(|| format!("topic '{topic}'"))?;
            let mut plan = Vec::new();
            for p in info.partitions.iter().map(|p| p.index) {
                let start = client.list_offset(&topic, p, -2).await?;
                let end = client.list_offset(&topic, p, -1).await?;
                let current = committed.get(&(topic.clone(), p)).copied();
                let target = if to_earliest {
                    start
                } else if to_latest {
                    end
                } else if let Some(o) = to_offset {
                    o
                } else if let Some(ts) = to_timestamp {
                    match client.list_offset(&topic, p, ts).await? {
                        -1 => end,
                        o => o,
                    }
                } else if let Some(by) = shift_by {
                    current.unwrap_or(start) + by
                } else {
                    bail!("say where to: --to-earliest, --to-latest, --to-offset, --to-timestamp or --shift-by");
                };
                plan.push(((topic.clone(), p), current, target.clamp(start, end)));
            }
            println!("{:<30} {:>9} {:>14} {:>14}", "topic", "partition", "current", "new");
            for ((t, p), current, target) in &plan {
                let current = current.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                println!("{t:<30} {p:>9} {current:>14} {target:>14}");
            }
            if execute {
                let offsets: Vec<_> = plan.iter().map(|(tp, _, target)| (tp.clone(), *target)).collect();
                client.commit_offsets(&group, &offsets).await?;
                println!("offsets of group {group} reset");
            } else {
                println!("(dry run: add --execute to apply)");
            }
        }
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await.with_context(|| format!("deleting group '{group}'"))?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

async fn describe(client: &Client, group: &str) -> Result<()> {
    let g = client.describe_group(group).await?;
    // Which member owns which partition.
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let consumer_protocol = client.describe_consumer_group(group).await.ok();
    println!(
        "group {group}: state {}, protocol type {}, assignor {}",
        consumer_protocol.as_ref().map(|c| c.group_state.to_string()).unwrap_or_else(|| g.group_state.to_string()),
        if consumer_protocol.is_some() { "consumer (KIP-848)".to_string() } else { g.protocol_type.to_string() },
        consumer_protocol.as_ref().map(|c| c.assignor_name.to_string()).unwrap_or_else(|| g.protocol_data.to_string()),
    );
    match &consumer_protocol {
        Some(c) => {
            for m in &c.members {
                println!(
                    "  member {} ({} {}) epoch {}",
                    m.member_id.as_str(),
                    m.client_id.as_str(),
                    m.client_host.as_str(),
                    m.member_epoch
                );
                for tp in &m.assignment.topic_partitions {
                    for p in &tp.partitions {
                        owner.insert((tp.topic_name.to_string(), *p), m.member_id.to_string());
                    }
                }
            }
        }
        None => {
            for m in &g.members {
                println!("  member {} ({} {})", m.member_id.as_str(), m.client_id.as_str(), m.client_host.as_str());
                let mut buf = m.member_assignment.clone();
                if buf.len() >= 2 {
                    let version = i16::from_be_bytes([buf[0], buf[1]]);
                    let _ = bytes::Buf::get_i16(&mut buf);
                    if let Ok(a) = ConsumerProtocolAssignment::decode(&mut buf, version) {
                        for tp in &a.assigned_partitions {
                            for p in &tp.partitions {
                                owner.insert((tp.topic.to_string(), *p), m.member_id.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    let committed = client.committed_offsets(group).await?;
    let mut keys: Vec<(String, i32)> = committed.keys().cloned().collect();
    keys.extend(owner.keys().cloned());
    keys.sort();
    keys.dedup();
    println!("{:<30} {:>9} {:>14} {:>14} {:>10}  member", "topic", "partition", "committed", "end", "lag");
    let mut total = 0i64;
    for (t, p) in keys {
        let end = client.list_offset(&t, p, -1).await.unwrap_or(-1);
        let c = committed.get(&(t.clone(), p)).copied();
        let lag = c.map(|c| (end - c).max(0));
        total += lag.unwrap_or(0);
        println!(
            "{t:<30} {p:>9} {:>14} {end:>14} {:>10}  {}",
            c.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            owner.get(&(t.clone(), p)).map(String::as_str).unwrap_or("-")
        );
    }
    println!("total lag: {total}");
    Ok(())
}
