//! `freshet bench nexmark`: the streaming SQL engine on the Nexmark queries.
//!
//! The generator ([`freshet_sql::nexmark`]) first writes N events into `person`, `auction` and
//! `bid` (not timed). Then each query runs alone, on a fresh engine on this thread, from offset 0
//! until it has consumed all of its input; only that is timed. The engine is single-threaded, so
//! events per second is also events per second per core; CPU time (`getrusage`) is the whole
//! process's, which with the broker includes its partition writers and fsyncs.
//!
//! Topics are the embedded broker's (the engine's path inside `freshet serve`: record batches
//! decoded on read, encoded and fsynced on append, data in a temporary directory under `--dir`),
//! or in memory with `--topics memory`.
//!
//! `--engine direct` (the default) steps the engine's queries and appends their outputs, nothing
//! else; `--engine server` runs them as `freshet serve` does ([`SqlServer::step`]): the
//! statements through `/ksql`'s handler, each commit's outputs, changelog records and progress
//! in one broker transaction (exactly-once), then the state store updated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_broker::{Broker, BrokerConfig};
use freshet_log::fs::StdFs;
use freshet_sql::engine::Engine;
use freshet_sql::nexmark::{self, Config, Query};
use freshet_sql::topics::{MemTopics, Topics};

use crate::sql::broker_topics::BrokerTopics;
use crate::sql::ksql::{KsqlRequest, SqlServer, PROCESSING_LOG_TOPIC};

#[derive(Args, Clone)]
pub struct NexmarkArgs {
    /// Events to generate (2% persons, 6% auctions, 92% bids).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// q0, q1, q2, q3, q11, q14, q17, or all; a comma-separated list runs several.
    #[arg(long, default_value = "all")]
    pub query: String,
    /// Partitions of each input topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Event time advances by 1/RATE seconds per event (Nexmark's default 10000).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `broker`: the embedded broker's topics (data in a temporary directory under --dir);
    /// `memory`: in-memory topics.
    #[arg(long, default_value = "broker")]
    pub topics: String,
    /// Where the embedded broker keeps its data for the run.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// `direct`: step the queries and append their outputs; `server`: run them as `freshet
    /// serve` does (one broker transaction per commit with changelog and progress, state
    /// stores on disk). `server` needs broker topics.
    #[arg(long, value_enum, default_value_t = EngineKind::Direct)]
    pub engine: EngineKind,
}

/// How `bench nexmark` runs the queries.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    Direct,
    Server,
}

/// One query's run.
pub struct NexmarkResult {
    pub query: &'static str,
    /// Records the query read from its inputs.
    pub input: u64,
    /// Records it wrote to its sink.
    pub output: u64,
    pub secs: f64,
    /// CPU seconds of the whole process (user + system) during the run.
    pub cpu_secs: f64,
    /// Records that went to the processing log (should be 0).
    pub errors: usize,
}

impl NexmarkResult {
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {} |",
            self.query,
            self.input,
            self.secs,
            self.input as f64 / self.secs,
            self.cpu_secs,
            self.input as f64 / self.cpu_secs,
            self.output
        )
    }
}

/// CPU seconds (user + system) of this process and of its children that have been waited for.
pub(crate) fn cpu_secs() -> f64 {
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(who, &mut u) };
        total += t(u.ru_utime) + t(u.ru_stime);
    }
    total
}

fn queries(spec: &str) -> Result<Vec<&'static Query>> {
    if spec.eq_ignore_ascii_case("all") {
        return Ok(nexmark::QUERIES.iter().collect());
    }
    spec.split(',')
        .map(|name| {
            nexmark::query(name.trim()).with_context(|| {
                let names: Vec<&str> = nexmark::QUERIES.iter().map(|q| q.name).collect();
                format!("unknown query {name}: expected one of {} or all", names.join(", "))
            })
        })
        .collect()
}

pub async fn run(a: NexmarkArgs) -> Result<()> {
    let queries = queries(&a.query)?;
    if a.partitions < 1 || a.rate < 1 {
        bail!("--partitions and --rate must be at least 1");
    }
    if a.engine == EngineKind::Server && a.topics != "broker" {
        bail!("--engine server runs on the broker's topics (--topics broker)");
    }
    match a.topics.as_str() {
        "memory" => {
            let topics = Arc::new(MemTopics::new());
            tokio::task::spawn_blocking(move || bench(&a, &queries, Runner::Direct(topics))).await?
        }
        "broker" => {
            let tmp = tempfile::Builder::new().prefix("freshet-nexmark").tempdir_in(&a.dir)?;
            // Event time starts at a fixed date, long enough ago for the default retention to
            // delete the topics under the query: keep everything.
            let topic_defaults = freshet_common::TopicConfig::from_pairs([("retention.ms", "-1")])?;
            let config = BrokerConfig { data_dir: tmp.path().to_path_buf(), topic_defaults, ..Default::default() };
            let broker = tokio::task::spawn_blocking(move || Broker::open(config, Arc::new(StdFs))).await??;
            let background = broker.spawn_background();
            let topics = Arc::new(BrokerTopics::new(broker.clone(), tokio::runtime::Handle::current()));
            let runner = if a.engine == EngineKind::Server {
                let state_dir = tmp.path().join("sql-state");
                let opened = tokio::task::spawn_blocking(move || SqlServer::open(topics, Some(state_dir))).await?;
                Runner::Server(Box::new(opened.context("opening the SQL server")?))
            } else {
                Runner::Direct(topics)
            };
            let result = tokio::task::spawn_blocking(move || bench(&a, &queries, runner)).await?;
            for task in background {
                task.abort();
            }
            tokio::task::spawn_blocking(move || broker.close()).await?;
            drop(tmp);
            result
        }
        other => bail!("--topics {other}: expected broker or memory"),
    }
}

/// How the queries run: the engine's queries stepped directly over these topics, or the
/// server's statement handling and exactly-once steps.
enum Runner {
    Direct(Arc<dyn Topics>),
    Server(Box<SqlServer>),
}

/// Generates the events, then runs each query. Blocking.
fn bench(a: &NexmarkArgs, queries: &[&'static Query], mut runner: Runner) -> Result<()> {
    let topics: Arc<dyn Topics> = match &runner {
        Runner::Direct(t) => t.clone(),
        Runner::Server(s) => s.engine.topics().clone(),
    };
    let config = Config { events_per_second: a.rate, seed: a.seed, ..Config::default() };
    let bar = indicatif::ProgressBar::new(a.events);
    bar.set_style(
        indicatif::ProgressStyle::with_template("generating {bar:40} {pos}/{len} events ({per_sec}, {eta})")
            .expect("template"),
    );
    let started = Instant::now();
    let counts = nexmark::write(&*topics, config, a.events, a.partitions, 1000, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    eprintln!(
        "generated {} events ({} persons, {} auctions, {} bids) in {:.1} s, {} partitions per topic, {} topics",
        counts.total(),
        counts.persons,
        counts.auctions,
        counts.bids,
        started.elapsed().as_secs_f64(),
        a.partitions,
        a.topics
    );
    if let Runner::Server(server) = &mut runner {
        ksql(server, nexmark::SOURCES).context("the sources")?;
    }
    let mut results = vec![];
    for q in queries {
        let r = match &mut runner {
            Runner::Direct(topics) => run_query(q, topics)?,
            Runner::Server(server) => run_query_on_server(q, server)?,
        };
        eprintln!(
            "{}: {} records in {:.2} s, {:.0} records/s, {:.0} per CPU-second, {} out",
            r.query,
            r.input,
            r.secs,
            r.input as f64 / r.secs,
            r.input as f64 / r.cpu_secs,
            r.output
        );
        results.push(r);
    }
    println!();
    let engine =
        if a.engine == EngineKind::Server { ", as `freshet serve` runs them (exactly-once steps)" } else { "" };
    println!(
        "Nexmark, {} events ({} persons, {} auctions, {} bids), {} partitions, {} topics{engine}:",
        counts.total(),
        counts.persons,
        counts.auctions,
        counts.bids,
        a.partitions,
        a.topics
    );
    println!();
    println!("| query | input records | seconds | records/s | CPU seconds | records per CPU-second | output records |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        println!("{}", r.row());
    }
    for r in results.iter().filter(|r| r.errors > 0) {
        println!("\n{}: {} records went to the processing log", r.query, r.errors);
    }
    Ok(())
}

/// The query's sink topic, deleted (a sink left by an earlier run in the same topics would be
/// appended to), and how many records its inputs hold.
fn prepare(q: &Query, topics: &Arc<dyn Topics>) -> Result<(String, u64)> {
    let sink = q.name.to_uppercase();
    topics.delete_topic(&sink)?;
    let mut input = 0u64;
    for t in q.inputs {
        for p in 0..topics.partitions(t).unwrap_or(0) {
            input += topics.end_offset(t, p)? as u64;
        }
    }
    Ok((sink, input))
}

/// Runs one query from offset 0 to the end of its inputs: what `Engine::run_until_idle` does,
/// a step at a time so a progress bar can follow.
fn run_query(q: &'static Query, topics: &Arc<dyn Topics>) -> Result<NexmarkResult> {
    let mut engine = Engine::new(topics.clone());
    engine.execute(nexmark::SOURCES).with_context(|| format!("{}: the sources", q.name))?;
    let (sink, input) = prepare(q, topics)?;
    engine.execute(q.sql).with_context(|| format!("{}: {}", q.name, q.sql))?;
    let bar = indicatif::ProgressBar::new(input);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{} {{bar:40}} {{pos}}/{{len}} records ({{per_sec}})",
            q.name
        ))
        .expect("template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let cpu = cpu_secs();
    let started = Instant::now();
    let mut read = 0u64;
    loop {
        let mut progressed = 0;
        for query in engine.queries.values_mut() {
            progressed += query.step(topics, &mut engine.processing_log)?;
        }
        if progressed == 0 {
            break;
        }
        read += progressed as u64;
        bar.set_position(read);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_secs() - cpu;
    bar.finish_and_clear();
    if read != input {
        bail!("{}: read {read} records of {input}", q.name);
    }
    let mut output = 0u64;
    for p in 0..topics.partitions(&sink).unwrap_or(0) {
        output += topics.end_offset(&sink, p)? as u64;
    }
    Ok(NexmarkResult { query: q.name, input, output, secs, cpu_secs, errors: engine.processing_log.len() })
}

/// Runs statements through the `/ksql` handler; an error answer is an error.
fn ksql(server: &mut SqlServer, statements: &str) -> Result<()> {
    let properties = [("auto.offset.reset".to_string(), serde_json::json!("earliest"))].into_iter().collect();
    let req = KsqlRequest { ksql: statements.to_string(), streams_properties: properties, ..Default::default() };
    let reply = server.handle(req);
    if reply.status != 200 {
        bail!("{statements}: {}", reply.body);
    }
    Ok(())
}

/// [`run_query`] through the server: the query is created as `/ksql` would, runs with the
/// server's exactly-once steps until it has read all of its input, then is terminated (so each
/// query runs alone).
fn run_query_on_server(q: &'static Query, server: &mut SqlServer) -> Result<NexmarkResult> {
    let topics = server.engine.topics().clone();
    let (sink, input) = prepare(q, &topics)?;
    let errors_before = count_records(&topics, PROCESSING_LOG_TOPIC)?;
    ksql(server, q.sql)?;
    let cpu = cpu_secs();
    let started = Instant::now();
    let mut read = 0u64;
    loop {
        let progressed = server.step();
        if progressed == 0 {
            break;
        }
        read += progressed as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_secs() - cpu;
    ksql(server, "TERMINATE ALL;")?;
    if read != input {
        bail!("{}: read {read} records of {input}", q.name);
    }
    // Records, not offsets: each step's transaction marker takes an offset of the sink too.
    let output = count_records(&topics, &sink)?;
    let errors = count_records(&topics, PROCESSING_LOG_TOPIC)?.saturating_sub(errors_before) as usize;
    Ok(NexmarkResult { query: q.name, input, output, secs, cpu_secs, errors })
}

/// The records (not control records) of every partition of a topic; 0 when it does not exist.
fn count_records(topics: &Arc<dyn Topics>, topic: &str) -> Result<u64> {
    let mut n = 0;
    for p in 0..topics.partitions(topic).unwrap_or(0) {
        let mut offset = 0;
        loop {
            let read = topics.read(topic, p, offset, 10_000)?;
            let Some(last) = read.last() else { break };
            offset = last.offset + 1;
            n += read.len() as u64;
        }
    }
    Ok(n)
}
