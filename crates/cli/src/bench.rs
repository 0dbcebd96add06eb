//! `freshet bench`: the broker's throughput and latency beside this machine's raw limits, all
//! measured in one run.
//!
//! - `disk`: sequential writes of CHUNK bytes, each followed by fdatasync (the ceiling for
//!   acks=all with flush.messages=1); with `--rate`, the latency floor of acks=all at that rate
//!   instead: data arriving steadily, each round writing what arrived and fdatasyncing it (an
//!   ideal group commit into one file, no broker);
//! - `net`: one loopback TCP stream, 1 MiB writes;
//! - `produce`: N producer connections, each pipelining Produce requests of pre-encoded batches
//!   of R-byte records (the broker assigns offsets, so batches can be reused; client-side record
//!   encoding is not what is measured) round-robin over P partitions; with `--rate` the sends
//!   follow a fixed schedule and latency counts from the scheduled time (no coordinated
//!   omission);
//! - `consume`: fetches the whole topic from offset 0 (just written, so from the page cache);
//! - `all`: every one of the above, against a broker it starts, printed as Markdown;
//! - `nexmark`: the SQL engine on the Nexmark queries (in [`crate::bench_nexmark`]).
//! - `functions`: log → function → log (in [`crate::bench_functions`]).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use freshet_client::records::{self, Compression, NewRecord};
use freshet_client::{Client, Connection};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// fdatasync'd sequential write bandwidth of the disk holding DIR (or, with --rate, the
    /// latency of group-committed writes at that rate).
    Disk(DiskArgs),
    /// Loopback TCP bandwidth.
    Net(NetArgs),
    /// Produce throughput and latency against a broker.
    Produce(ProduceArgs),
    /// Consume throughput against a broker.
    Consume(ConsumeArgs),
    /// Consumer group join and rebalance times, and latency from producer to group member.
    Group(GroupArgs),
    /// Everything, against a broker started for the run; prints Markdown for BENCHMARKS.md.
    All(AllArgs),
    /// The streaming SQL engine on the Nexmark queries (q0-q3, q11, q14, q17) over generated events.
    Nexmark(crate::bench_nexmark::NexmarkArgs),
    /// Event-triggered functions: events through log → function (WASM, process) → log.
    Functions(crate::bench_functions::FunctionsArgs),
}

#[derive(Args, Clone)]
pub struct GroupArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Records for the end-to-end latency measurement.
    #[arg(long, default_value_t = 2000)]
    pub records: usize,
}

#[derive(Args, Clone)]
pub struct DiskArgs {
    /// Directory on the disk to measure.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Bytes written between two fdatasyncs.
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk: usize,
    /// Total bytes written.
    #[arg(long, default_value_t = 1 << 30)]
    pub total: usize,
    /// Instead: data arrives at this many MB/s; each round writes what arrived since the last
    /// and fdatasyncs it. Prints the latency from a byte's arrival to its fdatasync.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: how long to run.
    #[arg(long, default_value_t = 10.0, requires = "rate")]
    pub seconds: f64,
    /// With --rate: spread the data over this many files, each with its own thread and group
    /// commit, as the broker's partitions.
    #[arg(long, default_value_t = 1, requires = "rate")]
    pub files: usize,
    /// With --rate: write the files full first, so the run overwrites allocated blocks and no
    /// fdatasync needs a file system journal commit.
    #[arg(long, requires = "rate")]
    pub preallocate: bool,
}

#[derive(Args, Clone)]
pub struct NetArgs {
    /// Total bytes sent.
    #[arg(long, default_value_t = 4 << 30)]
    pub total: usize,
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per batch (one batch per Produce request).
    #[arg(long, default_value_t = 64)]
    pub batch_records: usize,
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Producer connections.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Requests each producer keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Total records per second (open loop); unlimited if not given.
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Bytes a Fetch may return per partition.
    #[arg(long, default_value_t = 8 << 20)]
    pub partition_max_bytes: i32,
}

#[derive(Args, Clone)]
pub struct AllArgs {
    /// Where the broker started for the run keeps its data (and the disk test writes).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds for each produce run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Disk(DiskArgs { rate: Some(rate), dir, seconds, files, preallocate, .. }) => {
            println!("{}", disk_at_rate(&dir, rate, seconds, files, preallocate)?.line());
        }
        BenchCommand::Disk(a) => {
            let r = disk(&a)?;
            println!(
                "disk: {:.0} MB/s ({} B chunks, fdatasync after each, {} syncs; write+fdatasync p50 {:.2} ms, p99 {:.2} ms)",
                r.mb_per_s, a.chunk, r.syncs, r.p50_ms, r.p99_ms
            );
        }
        BenchCommand::Net(a) => println!("loopback TCP: {:.0} MB/s", net(&a)?),
        BenchCommand::Produce(a) => println!("{}", produce(&a).await?.line()),
        BenchCommand::Consume(a) => {
            let r = consume(&a).await?;
            println!("consume: {:.0} MB/s, {:.0} records/s ({} bytes)", r.mb_per_s, r.records_per_s, r.bytes);
        }
        BenchCommand::Group(a) => println!("{}", group(&a).await?.line()),
        BenchCommand::All(a) => all(&a).await?,
        BenchCommand::Nexmark(a) => crate::bench_nexmark::run(a).await?,
        BenchCommand::Functions(a) => crate::bench_functions::run(a).await?,
    }
    Ok(())
}

pub struct DiskResult {
    pub mb_per_s: f64,
    pub syncs: usize,
    /// Latency of one write + fdatasync, in milliseconds: p50, p99.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Sequential `chunk`-byte writes, each followed by fdatasync.
pub fn disk(a: &DiskArgs) -> Result<DiskResult> {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::Builder::new().prefix("freshet-disk-bench").tempdir_in(&a.dir)?;
    let file = std::fs::File::create(tmp.path().join("data"))?;
    let buf = vec![0x5au8; a.chunk];
    let chunks = a.total.div_ceil(a.chunk);
    let mut latencies = Vec::with_capacity(chunks);
    let started = Instant::now();
    for i in 0..chunks {
        let t = Instant::now();
        file.write_all_at(&buf, (i * a.chunk) as u64)?;
        file.sync_data()?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Ok(DiskResult {
        mb_per_s: (chunks * a.chunk) as f64 / secs / 1e6,
        syncs: chunks,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

pub struct DiskLatency {
    pub rate_mb_per_s: f64,
    pub files: usize,
    pub preallocated: bool,
    /// What was written, per second (below the rate if the disk fell behind).
    pub mb_per_s: f64,
    pub syncs: usize,
    /// From a byte's arrival to the end of the fdatasync covering it.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl DiskLatency {
    pub fn line(&self) -> String {
        format!(
            "disk at {:.0} MB/s offered, {} file{}{}: {:.0} MB/s written, {} group commits; arrival to fdatasync p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
            self.rate_mb_per_s,
            self.files,
            if self.files == 1 { "" } else { "s" },
            if self.preallocated { " (preallocated)" } else { "" },
            self.mb_per_s, self.syncs, self.p50_ms, self.p99_ms, self.p999_ms
        )
    }
}

/// Open loop, the best acks=all can do at `mb_per_s` on this disk: data arrives steadily;
/// each round writes everything that arrived since the last round and fdatasyncs it, as a
/// group commit does (no requests, no broker). A round that falls behind carries the backlog,
/// so stalls show in the latencies (no coordinated omission), and every `SAMPLE_BYTES` of a
/// round is one sample, so a long round weighs as much as the data it held.
///
/// `files` splits the load over that many files, each with its own thread and its own group
/// commit (as the broker's partitions have); `preallocate` writes each file full (synced)
/// before the run, so the measured writes overwrite allocated blocks and an fdatasync needs no
/// file system journal commit: the floor without metadata updates.
pub fn disk_at_rate(dir: &Path, mb_per_s: f64, seconds: f64, files: usize, preallocate: bool) -> Result<DiskLatency> {
    use std::os::unix::fs::FileExt;
    const MAX_ROUND: usize = 8 << 20;
    const SAMPLE_BYTES: usize = 16 << 10;
    if !(mb_per_s > 0.0 && seconds > 0.0 && files > 0) {
        bail!("--rate, --seconds and --files must be positive");
    }
    let tmp = tempfile::Builder::new().prefix("freshet-disk-bench").tempdir_in(dir)?;
    let bytes_per_s = mb_per_s * 1e6 / files as f64;
    let buf = vec![0x5au8; MAX_ROUND];
    let mut opened = Vec::with_capacity(files);
    for i in 0..files {
        let file = std::fs::File::create(tmp.path().join(format!("data-{i}")))?;
        if preallocate {
            // What is written does not matter, only that the blocks are.
            let total = (bytes_per_s * seconds * 1.2) as u64 + MAX_ROUND as u64;
            let mut at = 0;
            while at < total {
                file.write_all_at(&buf, at)?;
                at += buf.len() as u64;
            }
            file.sync_all()?;
        }
        opened.push(file);
    }
    let started = Instant::now();
    // Each thread: (latency samples in ms, bytes written, fdatasyncs).
    let run = |file: &std::fs::File| -> std::io::Result<(Vec<f64>, usize, usize)> {
        let (mut latencies, mut written, mut syncs) = (vec![], 0usize, 0usize);
        // Arrival time (seconds since the start) of the first byte not yet written.
        let mut pending_since = 0.0f64;
        loop {
            let now = started.elapsed().as_secs_f64();
            if now >= seconds {
                return Ok((latencies, written, syncs));
            }
            let due = ((now - pending_since) * bytes_per_s) as usize;
            if due < 4096 {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let n = due.min(MAX_ROUND);
            let covers_until = pending_since + n as f64 / bytes_per_s;
            file.write_all_at(&buf[..n], written as u64)?;
            file.sync_data()?;
            let done = started.elapsed().as_secs_f64();
            // The round's bytes arrived evenly over [pending_since, covers_until].
            let samples = n.div_ceil(SAMPLE_BYTES);
            for k in 0..samples {
                let arrived = pending_since + (covers_until - pending_since) * (k as f64 + 0.5) / samples as f64;
                latencies.push((done - arrived) * 1000.0);
            }
            pending_since = covers_until;
            written += n;
            syncs += 1;
        }
    };
    let results: Vec<std::io::Result<(Vec<f64>, usize, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = opened.iter().map(|f| s.spawn(|| run(f))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("thread panicked"))))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let (mut latencies, mut written, mut syncs) = (vec![], 0, 0);
    for r in results {
        let (l, w, s) = r?;
        latencies.extend(l);
        written += w;
        syncs += s;
    }
    if latencies.is_empty() {
        bail!("no group commit ran in {seconds} s");
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Ok(DiskLatency {
        rate_mb_per_s: mb_per_s,
        files,
        preallocated: preallocate,
        mb_per_s: written as f64 / secs / 1e6,
        syncs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
    })
}

/// The `p` quantile (0..=1) of sorted, non-empty `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

/// One loopback TCP stream.
pub fn net(a: &NetArgs) -> Result<f64> {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total = a.total;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&buf)?;
        sent += buf.len();
    }
    drop(s);
    let got = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    Ok(got as f64 / secs / 1e6)
}

/// How late a scheduled send may be and still count as on time (tokio's timer resolution).
const TIMER_SLACK: Duration = Duration::from_millis(2);

pub struct ProduceResult {
    /// Sends that left later than TIMER_SLACK after their scheduled time.
    pub late_sends: u64,
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub errors: u64,
    /// Latencies in microseconds, sorted, one per request (every record of a batch shares it).
    pub latencies_us: Vec<u32>,
    pub args: ProduceArgs,
}

impl ProduceResult {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }
    pub fn line(&self) -> String {
        format!(
            "produce: {:.0} records/s, {:.0} MB/s, latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms ({} records of {} B, {} producers, {} partitions, acks={}, {} errors, {} late sends)",
            self.records_per_s(),
            self.mb_per_s(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.records,
            self.args.record_size,
            self.args.producers,
            self.args.partitions,
            self.args.acks,
            self.errors,
            self.late_sends
        )
    }
}

fn bench_batch(records: usize, size: usize) -> Result<Bytes> {
    let value = Bytes::from(vec![b'r'; size]);
    let now = freshet_broker::now_ms();
    let recs: Vec<NewRecord> = (0..records)
        .map(|_| NewRecord { key: None, value: Some(value.clone()), headers: vec![], timestamp: now })
        .collect();
    Ok(records::encode(&recs, Compression::None)?)
}

async fn ensure_topic(client: &Client, topic: &str, partitions: i32) -> Result<()> {
    match client.topic(topic).await {
        Ok(info) if info.partitions.len() as i32 >= partitions => Ok(()),
        Ok(info) => bail!("topic {topic} exists with {} partitions; {partitions} wanted", info.partitions.len()),
        Err(_) => Ok(client.create_topic(topic, partitions, &[]).await?),
    }
}

pub async fn produce(a: &ProduceArgs) -> Result<ProduceResult> {
    let acks = crate::produce::parse_acks(&a.acks)?;
    let client = Client::connect(&a.bootstrap).await?;
    ensure_topic(&client, &a.topic, a.partitions).await?;
    let batch = bench_batch(a.batch_records, a.record_size)?;
    let records_done = Arc::new(AtomicU64::new(0));
    let bytes_done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    // Open loop: each producer sends a batch every `interval`.
    let interval = a.rate.map(|r| Duration::from_secs_f64(a.batch_records as f64 * a.producers as f64 / r));
    let mut tasks = Vec::new();
    for p in 0..a.producers {
        let conn = Arc::new(Connection::connect(&a.bootstrap, &format!("bench-{p}")).await?);
        let (batch, topic, a) = (batch.clone(), a.topic.clone(), a.clone());
        let (records_done, bytes_done, errors, stop, late) =
            (records_done.clone(), bytes_done.clone(), errors.clone(), stop.clone(), late.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let semaphore = Arc::new(tokio::sync::Semaphore::new(a.in_flight));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            let mut partition = (p as i32) % a.partitions;
            let mut next_send = Instant::now();
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                // Tokio's timer ticks in milliseconds: a send up to TIMER_SLACK late is on
                // schedule and its latency counts from the send; later than that, the generator
                // fell behind and latency counts from the scheduled time (no coordinated omission).
                let scheduled = match interval {
                    Some(iv) => {
                        tokio::time::sleep_until(next_send.into()).await;
                        let now = Instant::now();
                        let from = if now - next_send <= TIMER_SLACK {
                            now
                        } else {
                            late.fetch_add(1, Ordering::Relaxed);
                            next_send
                        };
                        next_send += iv;
                        from
                    }
                    None => Instant::now(),
                };
                let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
                let req = Client::produce_request(&topic, partition, batch.clone(), acks, Duration::from_secs(30));
                partition = (partition + 1) % a.partitions;
                let conn = conn.clone();
                let (records_done, bytes_done, errors, tx) =
                    (records_done.clone(), bytes_done.clone(), errors.clone(), tx.clone());
                let (n, size) = (a.batch_records as u64, (a.batch_records * a.record_size) as u64);
                // Enqueue in order now; await the response concurrently.
                let send = async move {
                    let result = if acks == 0 {
                        conn.send_without_response(&req, 9).await.map(|_| 0)
                    } else {
                        conn.send(&req, 9).await.map(|r| r.responses[0].partition_responses[0].error_code)
                    };
                    match result {
                        Ok(0) => {
                            records_done.fetch_add(n, Ordering::Relaxed);
                            bytes_done.fetch_add(size, Ordering::Relaxed);
                            let _ = tx.send(scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                };
                tokio::spawn(send);
                while let Ok(l) = rx.try_recv() {
                    latencies.push(l);
                }
            }
            // Wait for the requests still in flight.
            let _ = semaphore.acquire_many(a.in_flight as u32).await;
            while let Ok(l) = rx.try_recv() {
                latencies.push(l);
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    Ok(ProduceResult {
        late_sends: late.load(Ordering::Relaxed),
        records: records_done.load(Ordering::Relaxed),
        bytes: bytes_done.load(Ordering::Relaxed),
        secs,
        errors: errors.load(Ordering::Relaxed),
        latencies_us,
        args: a.clone(),
    })
}

pub struct ConsumeResult {
    pub bytes: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
}

/// Reads every partition of the topic from its start to its current end, one connection per
/// partition, and counts record batches without decoding records.
pub async fn consume(a: &ConsumeArgs) -> Result<ConsumeResult> {
    let client = Client::connect(&a.bootstrap).await?;
    let info = client.topic(&a.topic).await?;
    let mut tasks = Vec::new();
    let started = Instant::now();
    for p in info.partitions.iter().map(|p| p.index) {
        let start = client.list_offset(&a.topic, p, -2).await?;
        let end = client.list_offset(&a.topic, p, -1).await?;
        let conn = Connection::connect(&a.bootstrap, "bench-consumer").await?;
        let (topic, max) = (a.topic.clone(), a.partition_max_bytes);
        tasks.push(tokio::spawn(async move {
            let mut offset = start;
            let (mut bytes, mut records) = (0u64, 0u64);
            while offset < end {
                let req = Client::fetch_request(&topic, p, offset, Duration::from_millis(500), max);
                let resp = conn.send(&req, 12).await?;
                let part = &resp.responses[0].partitions[0];
                if part.error_code != 0 {
                    bail!("fetch error {}", part.error_code);
                }
                let data = part.records.clone().unwrap_or_default();
                bytes += data.len() as u64;
                // Walk batch headers: base offset, length, last offset delta, record count.
                let mut rest = &data[..];
                while rest.len() >= 61 {
                    let size = 12 + i32::from_be_bytes(rest[8..12].try_into()?) as usize;
                    if size > rest.len() {
                        break;
                    }
                    let base = i64::from_be_bytes(rest[0..8].try_into()?);
                    let delta = i32::from_be_bytes(rest[23..27].try_into()?) as i64;
                    records += i32::from_be_bytes(rest[57..61].try_into()?) as u64;
                    offset = base + delta + 1;
                    rest = &rest[size..];
                }
            }
            Ok((bytes, records))
        }));
    }
    let (mut bytes, mut records) = (0, 0);
    for t in tasks {
        let (b, r) = t.await??;
        bytes += b;
        records += r;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(ConsumeResult { bytes, records_per_s: records as f64 / secs, mb_per_s: bytes as f64 / secs / 1e6 })
}

pub struct GroupResult {
    pub first_join_ms: f64,
    pub three_join_ms: f64,
    pub rebalance_ms: f64,
    /// Producer send to group member receipt, acks=all, per record: p50, p99.
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
}

impl GroupResult {
    pub fn line(&self) -> String {
        format!(
            "group: first member joined in {:.1} ms; 3 members in {:.1} ms; rebalance after a member left {:.1} ms; producer to member p50 {:.2} ms, p99 {:.2} ms",
            self.first_join_ms, self.three_join_ms, self.rebalance_ms, self.e2e_p50_ms, self.e2e_p99_ms
        )
    }
}

/// A classic-protocol member driven by hand: join (with the member id round trip), sync.
struct Member {
    conn: Connection,
    group: String,
    id: String,
    generation: i32,
}

impl Member {
    async fn new(bootstrap: &str, group: &str) -> Result<Member> {
        Ok(Member {
            conn: Connection::connect(bootstrap, "bench-member").await?,
            group: group.into(),
            id: String::new(),
            generation: -1,
        })
    }

    /// JoinGroup until admitted, then SyncGroup; the leader assigns nothing (the bench only
    /// measures membership). Returns once synced.
    async fn join(&mut self, topic: &str) -> Result<()> {
        use freshet_client::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        use freshet_client::kafka_protocol::messages::*;
        use freshet_client::kafka_protocol::protocol::StrBytes;
        let mut meta = vec![0u8, 0, 0, 0, 0, 1];
        meta.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        meta.extend_from_slice(topic.as_bytes());
        meta.extend_from_slice(&[0, 0, 0, 0]);
        loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(StrBytes::from_string(self.id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from(meta.clone()))]);
            let resp = self.conn.send(&req, 7).await?;
            self.id = resp.member_id.to_string();
            if resp.error_code == freshet_client::kafka_protocol::ResponseError::MemberIdRequired.code() {
                continue;
            }
            if resp.error_code != 0 {
                bail!("JoinGroup failed with error {}", resp.error_code);
            }
            self.generation = resp.generation_id;
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.id.clone()));
            let resp = self.conn.send(&sync, 5).await?;
            match resp.error_code {
                0 => return Ok(()),
                e if e == freshet_client::kafka_protocol::ResponseError::RebalanceInProgress.code() => continue,
                e => bail!("SyncGroup failed with error {e}"),
            }
        }
    }

    /// Heartbeat: whether a rebalance is in progress.
    async fn rebalancing(&self) -> Result<bool> {
        use freshet_client::kafka_protocol::messages::*;
        use freshet_client::kafka_protocol::protocol::StrBytes;
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.id.clone()));
        Ok(self.conn.send(&req, 4).await?.error_code != 0)
    }

    async fn leave(&self) -> Result<()> {
        use freshet_client::kafka_protocol::messages::leave_group_request::MemberIdentity;
        use freshet_client::kafka_protocol::messages::*;
        use freshet_client::kafka_protocol::protocol::StrBytes;
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_members(vec![MemberIdentity::default().with_member_id(StrBytes::from_string(self.id.clone()))]);
        self.conn.send(&req, 5).await?;
        Ok(())
    }
}

/// Group join and rebalance times, and producer-to-member latency through a group.
pub async fn group(a: &GroupArgs) -> Result<GroupResult> {
    let client = Client::connect(&a.bootstrap).await?;
    ensure_topic(&client, "bench-group", 3).await?;
    // The first member of a new group.
    let started = Instant::now();
    let mut first = Member::new(&a.bootstrap, "bench-g1").await?;
    first.join("bench-group").await?;
    let first_join_ms = started.elapsed().as_secs_f64() * 1000.0;
    first.leave().await?;
    // Three members joining a new group together.
    let started = Instant::now();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::new(&a.bootstrap, "bench-g3").await?);
    }
    let joins = members.iter_mut().map(|m| m.join("bench-group"));
    for r in futures::future::join_all(joins).await {
        r?;
    }
    let three_join_ms = started.elapsed().as_secs_f64() * 1000.0;
    // One leaves: the others notice at their next heartbeat (sent at once here) and rejoin.
    let started = Instant::now();
    let leaver = members.pop().expect("three members");
    leaver.leave().await?;
    for m in &members {
        while !m.rebalancing().await? {}
    }
    let rejoins = members.iter_mut().map(|m| m.join("bench-group"));
    for r in futures::future::join_all(rejoins).await {
        r?;
    }
    let rebalance_ms = started.elapsed().as_secs_f64() * 1000.0;
    for m in &members {
        m.leave().await?;
    }
    // Producer to consumer: acks=all writes, a long-polling reader, one record at a time.
    let reader = Connection::connect(&a.bootstrap, "bench-e2e-reader").await?;
    let writer = Connection::connect(&a.bootstrap, "bench-e2e-writer").await?;
    let mut offset = client.list_offset("bench-group", 0, -1).await?;
    let mut latencies = Vec::with_capacity(a.records);
    for _ in 0..a.records {
        let batch = bench_batch(1, 100)?;
        let sent = Instant::now();
        let req = Client::produce_request("bench-group", 0, batch, -1, Duration::from_secs(10));
        let fetch = Client::fetch_request("bench-group", 0, offset, Duration::from_secs(5), 1 << 20);
        let (fetched, produced) = tokio::join!(reader.send(&fetch, 12), writer.send(&req, 9));
        produced?;
        let fetched = fetched?;
        let records = fetched.responses[0].partitions[0].records.clone().unwrap_or_default();
        if records.is_empty() {
            bail!("the long poll returned no record");
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        offset += 1;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Ok(GroupResult { first_join_ms, three_join_ms, rebalance_ms, e2e_p50_ms: pct(0.5), e2e_p99_ms: pct(0.99) })
}

/// A broker process started for a benchmark run.
struct BenchServer {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl BenchServer {
    fn start(parent: &Path) -> Result<BenchServer> {
        let dir = tempfile::Builder::new().prefix("freshet-bench").tempdir_in(parent)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("FRESHET_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting freshet serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let addr = loop {
            let line = lines.next().context("freshet serve exited before listening")??;
            if let Some(rest) = line.strip_prefix("freshet: kafka listener on ") {
                break rest.split_whitespace().next().context("address")?.to_string();
            }
        };
        Ok(BenchServer { child, addr, _dir: dir })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}

/// Requests each producer keeps in flight in the max-rate runs of `bench all`: with acks=all a
/// closed loop's rate is what it has in flight over the fsync latency, so too few measure the
/// latency, not the maximum (8 reached ~215 MB/s here, 16 ~260 MB/s, 32 ~300 MB/s).
const MAX_RATE_IN_FLIGHT: usize = 32;

/// Requests each producer may keep in flight in the half-rate (open loop) run of `bench all`.
const HALF_RATE_IN_FLIGHT: usize = 64;

async fn all(a: &AllArgs) -> Result<()> {
    let server = BenchServer::start(&a.dir)?;
    let base = ProduceArgs {
        bootstrap: server.addr.clone(),
        topic: "bench".into(),
        record_size: 1024,
        batch_records: 64,
        partitions: 8,
        producers: 4,
        in_flight: MAX_RATE_IN_FLIGHT,
        acks: "all".into(),
        seconds: a.seconds,
        rate: None,
    };
    eprintln!("produce, maximum rate...");
    let max = produce(&base).await?;
    eprintln!("{}", max.line());
    let half_rate = max.records_per_s() / 2.0;
    // Each phase starts on a quiet disk: the previous one leaves writeback behind.
    let settle = || tokio::time::sleep(Duration::from_secs(5));
    settle().await;
    eprintln!("produce at half that rate ({half_rate:.0} records/s)...");
    // The same requests as the max-rate run, on a schedule, with enough in flight that a slow
    // fsync delays requests instead of capping the rate (with 8 in flight of 16 records, as
    // this run once had, the producers could not go faster than ~90k records/s).
    let half = produce(&ProduceArgs {
        topic: "bench-latency".into(),
        in_flight: HALF_RATE_IN_FLIGHT,
        rate: Some(half_rate),
        ..base.clone()
    })
    .await?;
    eprintln!("{}", half.line());
    settle().await;
    eprintln!("produce with acks=1...");
    let acks1 = produce(&ProduceArgs { topic: "bench-acks1".into(), acks: "1".into(), ..base.clone() }).await?;
    eprintln!("{}", acks1.line());
    eprintln!("consume the first topic from the page cache...");
    let c =
        consume(&ConsumeArgs { bootstrap: server.addr.clone(), topic: "bench".into(), partition_max_bytes: 8 << 20 })
            .await?;
    eprintln!("consumer groups...");
    let g = group(&GroupArgs { bootstrap: server.addr.clone(), records: 2000 }).await?;
    eprintln!("{}", g.line());
    drop(server);
    // The raw limits come last: deleting the disk test's files makes a disk mounted with
    // `discard` busy for a while, which would disturb the broker runs.
    settle().await;
    eprintln!("measuring the disk...");
    let raw = |chunk: usize, total: usize| DiskArgs {
        dir: a.dir.clone(),
        chunk,
        total,
        rate: None,
        seconds: 0.0,
        files: 1,
        preallocate: false,
    };
    let disk64 = disk(&raw(64 << 10, 256 << 20))?;
    let disk1m = disk(&raw(1 << 20, 1 << 30))?;
    settle().await;
    let disk_half = disk_at_rate(&a.dir, half.mb_per_s(), a.seconds, 1, false)?;
    settle().await;
    let disk_half_8 = disk_at_rate(&a.dir, half.mb_per_s(), a.seconds, 8, false)?;
    eprintln!("measuring loopback TCP...");
    let loopback = net(&NetArgs { total: 4 << 30 })?;

    println!("Machine: {}", machine());
    println!();
    println!("| measurement | result | reference (same run) |");
    println!("|---|---|---|");
    println!(
        "| disk: sequential write, fdatasync every 64 KiB | {:.0} MB/s; one write+fdatasync p50 {:.2} ms, p99 {:.2} ms | |",
        disk64.mb_per_s, disk64.p50_ms, disk64.p99_ms
    );
    println!("| disk: sequential write, fdatasync every 1 MiB | {:.0} MB/s | |", disk1m.mb_per_s);
    println!("| loopback TCP, one stream | {:.0} MB/s | |", loopback);
    let row = |name: &str, r: &ProduceResult, reference: String| {
        println!(
            "| {name} | {:.0} records/s, {:.0} MB/s; p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms | {reference} |",
            r.records_per_s(),
            r.mb_per_s(),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.percentile_ms(0.999)
        )
    };
    row(
        "produce 1 KiB records, acks=all, 4 producers, 8 partitions, max rate",
        &max,
        format!("{:.0}% of the 1 MiB fdatasync bandwidth", 100.0 * max.mb_per_s() / disk1m.mb_per_s),
    );
    row(
        "produce, acks=all, at half the max rate",
        &half,
        format!("target p99 < 2 ms; one fdatasync alone: p50 {:.2} ms, p99 {:.2} ms", disk64.p50_ms, disk64.p99_ms),
    );
    println!(
        "| disk alone at that rate: group-committed writes to one file, no broker | {:.0} MB/s; arrival to fdatasync p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms | the floor under the row above |",
        disk_half.mb_per_s, disk_half.p50_ms, disk_half.p99_ms, disk_half.p999_ms
    );
    println!(
        "| disk alone at that rate over 8 files, each with its own group commit (as 8 partitions) | {:.0} MB/s; arrival to fdatasync p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms | the floor of this design |",
        disk_half_8.mb_per_s, disk_half_8.p50_ms, disk_half_8.p99_ms, disk_half_8.p999_ms
    );
    row("produce 1 KiB records, acks=1, max rate", &acks1, String::new());
    println!(
        "| consume from the page cache, 8 partitions | {:.0} MB/s, {:.0} records/s | {:.0}% of loopback TCP |",
        c.mb_per_s,
        c.records_per_s,
        100.0 * c.mb_per_s / loopback
    );
    println!(
        "| consumer group: first member joins a new group | {:.1} ms | includes the 100 ms initial rebalance delay |",
        g.first_join_ms
    );
    println!("| consumer group: 3 members join a new group | {:.1} ms | |", g.three_join_ms);
    println!("| consumer group: rebalance after a member leaves | {:.1} ms | |", g.rebalance_ms);
    println!(
        "| end to end: acks=all produce to a long-polling reader, 100 B records | p50 {:.2} ms, p99 {:.2} ms | |",
        g.e2e_p50_ms, g.e2e_p99_ms
    );
    if max.errors + half.errors + acks1.errors > 0 {
        bail!("{} produce requests failed", max.errors + half.errors + acks1.errors);
    }
    Ok(())
}
