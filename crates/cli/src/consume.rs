//! `freshet consume TOPIC`: print records.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use freshet_client::kafka_protocol::ResponseError;
use freshet_client::{records, Client};
use tokio::sync::mpsc;

use crate::Bootstrap;

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    /// Start at the oldest record (default: at the end).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset (with --partition).
    #[arg(long, requires = "partition", conflicts_with = "from_timestamp")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (milliseconds since the epoch).
    #[arg(long)]
    pub from_timestamp: Option<i64>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Print each record's key.
    #[arg(long)]
    pub print_key: bool,
    /// Print each record's partition.
    #[arg(long)]
    pub print_partition: bool,
    /// Print each record's offset.
    #[arg(long)]
    pub print_offset: bool,
    /// Print each record's timestamp.
    #[arg(long)]
    pub print_timestamp: bool,
    /// Print each record's headers (NAME=VALUE,...).
    #[arg(long)]
    pub print_headers: bool,
    /// Separator between printed fields.
    #[arg(long, default_value = "\t")]
    pub separator: String,
}

struct Printed {
    partition: i32,
    records: Vec<records::Record>,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    let client = std::sync::Arc::new(
        Client::connect(&args.bootstrap.bootstrap)
            .await
            .with_context(|| format!("connecting to {}", args.bootstrap.bootstrap))?,
    );
    let info = client.topic(&args.topic).await.with_context(|| format!("topic '{}'", args.topic))?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if info.partitions.iter().any(|x| x.index == p) => vec![p],
        Some(p) => bail!("topic '{}' has no partition {p}", args.topic),
        None => info.partitions.iter().map(|p| p.index).collect(),
    };
    let (tx, mut rx) = mpsc::channel::<Result<Printed>>(16);
    for p in partitions {
        let start = if let Some(o) = args.offset {
            if o < 0 {
                bail!("--offset must not be negative");
            }
            o
        } else if args.from_beginning {
            client.list_offset(&args.topic, p, -2).await?
        } else if let Some(ts) = args.from_timestamp {
            match client.list_offset(&args.topic, p, ts).await? {
                -1 => client.list_offset(&args.topic, p, -1).await?,
                o => o,
            }
        } else {
            client.list_offset(&args.topic, p, -1).await?
        };
        let stop = if args.follow { None } else { Some(client.list_offset(&args.topic, p, -1).await?) };
        let (client, topic, tx) = (client.clone(), args.topic.clone(), tx.clone());
        tokio::spawn(async move {
            if let Err(e) = read_partition(&client, &topic, p, start, stop, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let limit = args.max_messages.unwrap_or(u64::MAX);
    while let Some(msg) = rx.recv().await {
        let msg = msg?;
        for r in msg.records {
            if printed >= limit {
                break;
            }
            print_record(&mut out, &args, msg.partition, &r)?;
            printed += 1;
        }
        out.flush()?;
        if printed >= limit {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

async fn read_partition(
    client: &Client,
    topic: &str,
    partition: i32,
    mut offset: i64,
    stop: Option<i64>,
    tx: &mpsc::Sender<Result<Printed>>,
) -> Result<()> {
    loop {
        if stop.is_some_and(|s| offset >= s) {
            return Ok(());
        }
        let (bytes, _hw): (Bytes, i64) =
            match client.fetch(topic, partition, offset, Duration::from_millis(500), 4 * 1024 * 1024).await {
                Ok(r) => r,
                Err(e) if e.code() == Some(ResponseError::OffsetOutOfRange) => {
                    let earliest = client.list_offset(topic, partition, -2).await?;
                    eprintln!("offset {offset} of {topic}-{partition} is gone; continuing at {earliest}");
                    offset = earliest;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("fetching {topic}-{partition} at {offset}")),
            };
        let mut batch: Vec<records::Record> =
            records::decode(&bytes)?.into_iter().filter(|r| r.offset >= offset).collect();
        if let Some(s) = stop {
            batch.retain(|r| r.offset < s);
        }
        if let Some(last) = batch.last() {
            offset = last.offset + 1;
        } else if !bytes.is_empty() {
            // Only control records or records before the offset: move past the batch.
            if let Some(next) = next_offset_after(&bytes) {
                offset = offset.max(next);
            }
        }
        if !batch.is_empty() && tx.send(Ok(Printed { partition, records: batch })).await.is_err() {
            return Ok(());
        }
    }
}

/// The offset after the last complete batch in a fetch response.
fn next_offset_after(bytes: &Bytes) -> Option<i64> {
    let mut rest = &bytes[..];
    let mut next = None;
    while rest.len() >= 61 {
        let size = 12 + i32::from_be_bytes(rest[8..12].try_into().ok()?) as usize;
        if size > rest.len() {
            break;
        }
        let base = i64::from_be_bytes(rest[0..8].try_into().ok()?);
        let delta = i32::from_be_bytes(rest[23..27].try_into().ok()?) as i64;
        next = Some(base + delta + 1);
        rest = &rest[size..];
    }
    next
}

fn print_record(out: &mut impl Write, args: &ConsumeArgs, partition: i32, r: &records::Record) -> Result<()> {
    let sep = args.separator.as_bytes();
    if args.print_partition {
        write!(out, "{partition}")?;
        out.write_all(sep)?;
    }
    if args.print_offset {
        write!(out, "{}", r.offset)?;
        out.write_all(sep)?;
    }
    if args.print_timestamp {
        write!(out, "{}", r.timestamp)?;
        out.write_all(sep)?;
    }
    if args.print_key {
        out.write_all(r.key.as_deref().unwrap_or(b""))?;
        out.write_all(sep)?;
    }
    if args.print_headers {
        let mut first = true;
        for (k, v) in &r.headers {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            write!(out, "{}=", k.as_str())?;
            out.write_all(v.as_deref().unwrap_or(b""))?;
        }
        out.write_all(sep)?;
    }
    out.write_all(r.value.as_deref().unwrap_or(b""))?;
    out.write_all(b"\n")?;
    Ok(())
}
