//! `freshet bench functions`: events through log → function → log on the embedded broker.
//!
//! N records of S bytes are written to a P-partition input topic first (not timed). Then a
//! function (the WAT identity module, or a process function) is deployed on the function host
//! with the input as its topic trigger and an output topic, exactly as `freshet serve` runs it;
//! the run is timed from the deploy until the function's consumer group has committed every
//! input offset (so every output is durable). Reported: wall time, events/s, CPU seconds of
//! the whole process and its reaped children (broker writers, fsyncs and a process function's
//! own processes included) and events per CPU-second; the time
//! from the backlog to a scaled-up pool (more than one worker); and the cold start of an
//! instance (the runtime's `instantiate`, averaged).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_broker::{Broker, BrokerConfig};
use freshet_common::topics::{GroupOffsets, Record, Topics};
use freshet_functions::host::{FnTopics, Host, Loader};
use freshet_functions::spec::{Deployment, RuntimeSpec};
use freshet_functions::{FunctionSpec, Trigger};
use freshet_log::fs::StdFs;

use crate::bench_nexmark::cpu_secs;
use crate::functions::RuntimeLoader;
use crate::sql::broker_topics::BrokerTopics;

#[derive(Args, Clone)]
pub struct FunctionsArgs {
    /// Input records.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Partitions of the input topic (and most workers).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Events per invocation.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// `wasm`, `process` or `all`.
    #[arg(long, default_value = "all")]
    pub runtime: String,
    /// The WASM identity module (WAT or binary).
    #[arg(long, default_value = "examples/functions/wat/identity.wat")]
    pub wasm: PathBuf,
    /// The process function's command (JSON lines); default: a Python identity function.
    #[arg(long)]
    pub command: Option<String>,
    /// Records for the process runtime (it is far slower than WASM).
    #[arg(long, default_value_t = 100_000)]
    pub process_events: u64,
    /// Where the embedded broker keeps its data for the run.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

const PYTHON_IDENTITY: &str = r#"import json, sys
for line in sys.stdin:
    req = json.loads(line)
    out = [{"key": e["key"], "value": e["value"]} for e in req["events"]]
    sys.stdout.write(json.dumps({"id": req["id"], "outputs": out}) + "\n")
    sys.stdout.flush()
"#;

struct Run {
    name: String,
    events: u64,
    secs: f64,
    cpu: f64,
    scale_up_ms: Option<f64>,
    peak_workers: i64,
    cold_start_us: f64,
}

pub async fn run(a: FunctionsArgs) -> Result<()> {
    if a.partitions < 1 || a.batch_size < 1 || a.events < 1 {
        bail!("--events, --partitions and --batch-size must be at least 1");
    }
    let tmp = tempfile::Builder::new().prefix("freshet-fn-bench").tempdir_in(&a.dir)?;
    let topic_defaults = freshet_common::TopicConfig::from_pairs([("retention.ms", "-1")])?;
    let config = BrokerConfig { data_dir: tmp.path().to_path_buf(), topic_defaults, ..Default::default() };
    let broker = tokio::task::spawn_blocking(move || Broker::open(config, Arc::new(StdFs))).await??;
    let background = broker.spawn_background();
    let topics = Arc::new(BrokerTopics::new(broker.clone(), tokio::runtime::Handle::current()));
    let script = tmp.path().join("identity.py");
    std::fs::write(&script, PYTHON_IDENTITY)?;
    let result = tokio::task::spawn_blocking(move || bench(&a, topics, &script)).await?;
    for task in background {
        task.abort();
    }
    tokio::task::spawn_blocking(move || broker.close()).await?;
    drop(tmp);
    result
}

fn bench(a: &FunctionsArgs, topics: Arc<BrokerTopics>, script: &std::path::Path) -> Result<()> {
    let mut kinds = vec![];
    if matches!(a.runtime.as_str(), "wasm" | "all") {
        let code = std::fs::read(&a.wasm).with_context(|| format!("reading {}", a.wasm.display()))?;
        let code = wat::parse_bytes(&code).with_context(|| format!("compiling {}", a.wasm.display()))?.into_owned();
        kinds.push(("wasm".to_string(), RuntimeSpec::Wasm, code, a.events));
    }
    if matches!(a.runtime.as_str(), "process" | "all") {
        let command = a.command.clone().unwrap_or_else(|| format!("exec python3 -u {}", script.display()));
        kinds.push((
            format!("process ({command})"),
            RuntimeSpec::Process { command, env: Default::default() },
            vec![],
            a.process_events,
        ));
    }
    if kinds.is_empty() {
        bail!("--runtime {}: expected wasm, process or all", a.runtime);
    }
    let host = Host::open(topics.clone() as Arc<dyn FnTopics>, Arc::new(RuntimeLoader))?;
    let mut runs = vec![];
    for (i, (name, runtime, code, events)) in kinds.into_iter().enumerate() {
        let input = format!("bench-in-{i}");
        write_input(&*topics, &input, a.partitions, events, a.size)?;
        let mut spec = FunctionSpec::new(
            &format!("bench-{i}"),
            runtime,
            Trigger::Topic { topic: input.clone(), group: None, start: Default::default(), filter: None },
        );
        spec.output = Some(format!("bench-out-{i}"));
        spec.batch_size = a.batch_size;
        spec.max_concurrency = a.partitions as u32;
        let d = Deployment { spec: spec.clone(), code };
        let cold_start_us = cold_start(&d)?;
        let group = spec.group();
        let cpu0 = cpu_secs();
        let t0 = Instant::now();
        host.deploy(d)?;
        let mut scale_up_ms = None;
        let mut peak = 0;
        loop {
            let s = host.status(&spec.name)?;
            peak = peak.max(s.workers);
            if s.workers > 1 && scale_up_ms.is_none() {
                scale_up_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let done: i64 = topics.committed(&group, &input)?.values().sum();
            if done as u64 >= events {
                break;
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("{name}: not done after 10 minutes ({done} of {events} events)");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = t0.elapsed().as_secs_f64();
        // Deleting the function stops its workers, which reaps a process function's children,
        // so their CPU time is counted too.
        host.delete(&spec.name)?;
        let cpu = cpu_secs() - cpu0;
        let out: i64 = (0..a.partitions).map(|p| topics.end_offset(&format!("bench-out-{i}"), p).unwrap_or(0)).sum();
        if (out as u64) < events {
            bail!("{name}: {out} outputs for {events} events");
        }
        eprintln!(
            "{name}: {events} events in {secs:.2} s, {:.0} events/s, {:.0} per CPU-second, scaled up in {:?} ms",
            events as f64 / secs,
            events as f64 / cpu,
            scale_up_ms.map(|m| m.round())
        );
        runs.push(Run { name, events, secs, cpu, scale_up_ms, peak_workers: peak, cold_start_us });
    }
    host.shutdown();
    println!();
    println!(
        "Functions, identity, {}-byte values, {} partitions, batches of {}, embedded broker (acks=all writes):",
        a.size, a.partitions, a.batch_size
    );
    println!();
    println!("| runtime | events | seconds | events/s | CPU seconds | events per CPU-second | backlog → >1 worker | peak workers | cold start |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {} | {:.0} µs |",
            r.name,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            r.cpu,
            r.events as f64 / r.cpu,
            r.scale_up_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "-".into()),
            r.peak_workers,
            r.cold_start_us
        );
    }
    Ok(())
}

/// Writes the input: `events` records spread round-robin over the partitions, in batches.
fn write_input(topics: &dyn Topics, topic: &str, partitions: i32, events: u64, size: usize) -> Result<()> {
    topics.create_topic(topic, partitions)?;
    let bar = indicatif::ProgressBar::new(events);
    let value = bytes::Bytes::from(vec![b'x'; size]);
    let per = events.div_ceil(partitions as u64);
    let mut written = 0;
    for p in 0..partitions {
        let mut left = per.min(events - written);
        while left > 0 {
            let n = left.min(5000);
            let records = (0..n)
                .map(|i| Record {
                    key: Some(format!("k{}", (written + i) % 1000).into_bytes().into()),
                    value: Some(value.clone()),
                    timestamp: 1,
                    headers: vec![],
                })
                .collect();
            topics.append(topic, p, records)?;
            left -= n;
            written += n;
            bar.set_position(written);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Average microseconds of one `instantiate` (after the module is compiled).
fn cold_start(d: &Deployment) -> Result<f64> {
    let factory = RuntimeLoader.load(d, Arc::new(|_: &str, _: &str| {}))?;
    let n = if matches!(d.spec.runtime, RuntimeSpec::Wasm) { 1000 } else { 5 };
    let t = Instant::now();
    for _ in 0..n {
        drop(factory.instantiate()?);
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}
