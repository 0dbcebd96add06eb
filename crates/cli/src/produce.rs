//! `freshet produce TOPIC`: lines from standard input become records.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use freshet_client::records::{self, Compression, NewRecord};
use freshet_client::Client;

use crate::Bootstrap;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to write to (created on first use if the broker allows it).
    pub topic: String,
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Acknowledgement: all (durable), 1 (written) or 0 (none).
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Write every record to this partition (default: by key hash, else round robin).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Header NAME=VALUE on every record (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Most records in one batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
}

pub fn parse_acks(s: &str) -> Result<i16> {
    Ok(match s {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("--acks must be all, 1 or 0, not '{other}'"),
    })
}

pub fn parse_compression(s: &str) -> Result<Compression> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("--compression must be none, gzip, snappy, lz4 or zstd, not '{other}'"),
    })
}

use freshet_common::partitioner::partition_for_key;

pub async fn run(args: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&args.acks)?;
    let compression = parse_compression(&args.compression)?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|h| crate::topic::parse_pair(h).map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<Result<_>>()?;
    let client = Client::connect(&args.bootstrap.bootstrap)
        .await
        .with_context(|| format!("connecting to {}", args.bootstrap.bootstrap))?;
    let info = client.metadata(Some(&[args.topic.as_str()]), true).await?;
    let info = info.into_iter().next().context("empty metadata response")?;
    if info.error_code != 0 {
        // The topic may be in creation: ask once more.
        let retry = client.topic(&args.topic).await.with_context(|| format!("topic '{}'", args.topic))?;
        if retry.partitions.is_empty() {
            bail!("topic '{}' has no partitions", args.topic);
        }
    }
    let partitions = client.topic(&args.topic).await?.partitions.len() as i32;
    if let Some(p) = args.partition {
        if p < 0 || p >= partitions {
            bail!("topic '{}' has partitions 0..{}; there is no partition {p}", args.topic, partitions - 1);
        }
    }
    // Read stdin on a thread; send lines over a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(args.batch_records.max(1) * 4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        line.pop();
                    }
                    if tx.blocking_send(line.clone()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} records sent ({per_sec})").expect("template"),
    );
    let mut sent = 0u64;
    let mut round_robin = 0i32;
    while let Some(first) = rx.recv().await {
        let mut lines = vec![first];
        while lines.len() < args.batch_records {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        let now = freshet_broker::now_ms();
        let mut by_partition: std::collections::BTreeMap<i32, Vec<NewRecord>> = Default::default();
        for line in lines {
            let (key, value) = match &args.key_separator {
                Some(sep) => match find(&line, sep.as_bytes()) {
                    Some(i) => {
                        (Some(Bytes::copy_from_slice(&line[..i])), Bytes::copy_from_slice(&line[i + sep.len()..]))
                    }
                    None => (None, Bytes::from(line)),
                },
                None => (None, Bytes::from(line)),
            };
            let partition = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => round_robin,
            };
            by_partition.entry(partition).or_default().push(NewRecord {
                key,
                value: Some(value),
                headers: headers.clone(),
                timestamp: now,
            });
        }
        round_robin = (round_robin + 1) % partitions;
        let sends = by_partition.iter().map(|(p, records)| {
            let client = &client;
            let topic = &args.topic;
            async move {
                let batch = records::encode(records, compression)?;
                client.produce(topic, *p, batch, acks).await.with_context(|| format!("producing to {topic}-{p}"))?;
                Ok::<u64, anyhow::Error>(records.len() as u64)
            }
        });
        for n in futures::future::join_all(sends).await {
            let n = n?;
            sent += n;
            bar.inc(n);
        }
    }
    bar.finish_and_clear();
    eprintln!("{sent} records produced to {}", args.topic);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert!(parse_acks("2").is_err());
        assert_eq!(parse_compression("zstd").unwrap(), Compression::Zstd);
        assert!(parse_compression("brotli").is_err());
        assert_eq!(find(b"k:v:w", b":"), Some(1));
    }
}
