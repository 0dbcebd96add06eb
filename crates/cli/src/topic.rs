//! `freshet topic ...`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use freshet_client::Client;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (-1: the broker's default).
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// Topic config, NAME=VALUE (repeatable), e.g. --config retention.ms=86400000.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, offsets and configs.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change a topic's configs or grow its partitions.
    Alter {
        name: String,
        /// Set a config, NAME=VALUE (repeatable).
        #[arg(long = "set")]
        set: Vec<String>,
        /// Remove a config override, NAME (repeatable).
        #[arg(long = "delete-config")]
        delete: Vec<String>,
        /// New (larger) number of partitions.
        #[arg(long)]
        partitions: Option<i32>,
    },
}

pub fn parse_pair(s: &str) -> Result<(String, String)> {
    let (k, v) = s.split_once('=').with_context(|| format!("'{s}' is not NAME=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

pub async fn run(command: TopicCommand, bootstrap: &str) -> Result<()> {
    let client = Client::connect(bootstrap).await.with_context(|| format!("connecting to {bootstrap}"))?;
    match command {
        TopicCommand::Create { name, partitions, configs } => {
            let configs = configs.iter().map(|c| parse_pair(c)).collect::<Result<Vec<_>>>()?;
            client
                .create_topic(&name, partitions, &configs)
                .await
                .with_context(|| format!("creating topic '{name}'"))?;
            println!("created topic {name}");
        }
        TopicCommand::List => {
            let mut topics = client.metadata(None, false).await?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                println!("{}\t{} partitions", t.name, t.partitions.len());
            }
        }
        TopicCommand::Describe { name } => {
            let info = client.topic(&name).await.with_context(|| format!("describing topic '{name}'"))?;
            println!("topic {} (id {})", info.name, info.id);
            println!("{:>9}  {:>6}  {:>14}  {:>14}", "partition", "leader", "start offset", "end offset");
            for p in &info.partitions {
                let start = client.list_offset(&name, p.index, -2).await?;
                let end = client.list_offset(&name, p.index, -1).await?;
                println!("{:>9}  {:>6}  {:>14}  {:>14}", p.index, p.leader, start, end);
            }
            let configs = client.describe_topic_configs(&name).await?;
            println!("configs (* set on the topic):");
            for (k, v, source) in configs {
                println!("  {}{k}={v}", if source == 1 { "*" } else { " " });
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await.with_context(|| format!("deleting topic '{name}'"))?;
            println!("deleted topic {name}");
        }
        TopicCommand::Alter { name, set, delete, partitions } => {
            if set.is_empty() && delete.is_empty() && partitions.is_none() {
                bail!("nothing to change: give --set, --delete-config or --partitions");
            }
            let mut changes: Vec<(String, Option<String>)> = Vec::new();
            for s in &set {
                let (k, v) = parse_pair(s)?;
                changes.push((k, Some(v)));
            }
            changes.extend(delete.into_iter().map(|k| (k, None)));
            if !changes.is_empty() {
                client
                    .alter_topic_configs(&name, &changes)
                    .await
                    .with_context(|| format!("altering topic '{name}'"))?;
            }
            if let Some(count) = partitions {
                client
                    .create_partitions(&name, count)
                    .await
                    .with_context(|| format!("adding partitions to '{name}'"))?;
            }
            println!("altered topic {name}");
        }
    }
    Ok(())
}
