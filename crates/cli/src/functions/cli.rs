//! `freshet fn deploy|list|status|logs|delete|invoke`: the functions' HTTP API for people.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use freshet_functions::host::{FunctionStatus, LogLine};
use freshet_functions::spec::{CloudEventsMode, RuntimeSpec, Start, Trigger};
use freshet_functions::FunctionSpec;
use serde_json::Value as Json;

use super::http::{DeployRequest, LogsResponse, KEY_HEADER};
use crate::sql_shell::client::normalize_addr;
use crate::sql_shell::render::listing;

#[derive(Args)]
pub struct FnArgs {
    /// The server: the HTTP address of `freshet serve` (its --http-listen), ADDR:PORT.
    #[arg(long, env = "FRESHET_HTTP", default_value = "127.0.0.1:8088", value_name = "ADDR:PORT", global = true)]
    http: String,
    #[command(subcommand)]
    command: FnCommand,
}

#[derive(Subcommand)]
pub enum FnCommand {
    /// Deploy a function, or a new version of it.
    Deploy(Box<DeployArgs>),
    /// List the deployed functions.
    List,
    /// Show a function's definition, workers, lag and invocation figures.
    Status {
        name: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a function's log: its stderr/stdout and its errors.
    Logs {
        name: String,
        /// How many of the last lines.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Delete a function (its workers finish their batches first).
    Delete { name: String },
    /// Invoke a function once with one event and print its output.
    Invoke {
        name: String,
        /// The event's value (default: standard input).
        #[arg(long)]
        data: Option<String>,
        /// The event's key.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Args)]
pub struct DeployArgs {
    name: String,
    /// A WebAssembly module (see docs/functions-wasm-abi.md).
    #[arg(long, value_name = "FILE", group = "kind")]
    wasm: Option<PathBuf>,
    /// A command run with `sh -c`, speaking JSON lines (see docs/functions-protocols.md).
    #[arg(long, value_name = "CMD", group = "kind")]
    command: Option<String>,
    /// An HTTP endpoint receiving CloudEvents.
    #[arg(long, value_name = "URL", group = "kind")]
    url: Option<String>,
    /// topic:NAME, http, or cron:"EXPR".
    #[arg(long)]
    trigger: String,
    /// Default topic of the function's outputs.
    #[arg(long, value_name = "TOPIC")]
    output: Option<String>,
    /// Dead-letter topic (default NAME-dlq).
    #[arg(long, value_name = "TOPIC")]
    dlq: Option<String>,
    /// Events per invocation.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Wait this long to fill a batch.
    #[arg(long, value_name = "MS")]
    batch_window_ms: Option<u64>,
    /// Topic trigger without committed offsets starts at: earliest, latest or a timestamp (ms).
    #[arg(long)]
    start: Option<String>,
    /// Topic trigger's consumer group (default freshet-fn-NAME).
    #[arg(long)]
    group: Option<String>,
    /// Only events whose JSON value matches this pattern, e.g. '{"status": ["paid"]}'.
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// Time limit of one invocation.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Memory limit of a WASM instance.
    #[arg(long, value_name = "MB")]
    memory_mb: Option<u32>,
    /// Most workers at once.
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Attempts per event before it goes to the dead-letter topic.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Do not retry events older than this.
    #[arg(long, value_name = "MS")]
    max_record_age_ms: Option<u64>,
    /// Do not split a failing batch to find the failing events.
    #[arg(long)]
    no_bisect: bool,
    /// Give up partition order for per-key order (more concurrency).
    #[arg(long)]
    unordered: bool,
    /// Stop workers idle for this long.
    #[arg(long, value_name = "MS")]
    idle_ms: Option<u64>,
    /// Environment of a process function, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// CloudEvents mode of an HTTP function: binary or structured.
    #[arg(long, default_value = "binary")]
    cloudevents: String,
    /// PEM file of CA certificates an https:// function URL may be signed by, besides Mozilla's
    /// roots and the system's trust store (a private CA, a self-signed endpoint).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(addr: &str) -> Result<Api> {
        let addr = normalize_addr(addr)?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build();
        Ok(Api { base: format!("http://{addr}"), agent })
    }

    fn check(&self, r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match r {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let body = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Json>(&body)
                    .ok()
                    .and_then(|j| j["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {status}: {}", body.trim()));
                Err(anyhow!("{message}"))
            }
            Err(e) => Err(anyhow!(
                "could not reach the Freshet server at {}: {e} (is `freshet serve` running there? --http ADDR:PORT \
                 names another)",
                self.base
            )),
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let r = self.check(self.agent.get(&format!("{}{path}", self.base)).call())?;
        r.into_json().context("reading the server's answer")
    }
}

fn parse_trigger(t: &str, a: &DeployArgs) -> Result<Trigger> {
    if t == "http" {
        return Ok(Trigger::Http);
    }
    if let Some(expr) = t.strip_prefix("cron:") {
        return Ok(Trigger::Cron { expr: expr.trim_matches('"').to_string() });
    }
    if let Some(topic) = t.strip_prefix("topic:") {
        let start = match a.start.as_deref() {
            None | Some("earliest") => Start::Earliest,
            Some("latest") => Start::Latest,
            Some(ts) => Start::Timestamp(ts.parse().map_err(|_| {
                anyhow!("--start {ts}: expected earliest, latest or a timestamp in milliseconds since the epoch")
            })?),
        };
        let filter = match &a.filter {
            Some(f) => Some(serde_json::from_str(f).map_err(|e| anyhow!("--filter is not JSON: {e}"))?),
            None => None,
        };
        return Ok(Trigger::Topic { topic: topic.to_string(), group: a.group.clone(), start, filter });
    }
    bail!("--trigger {t}: expected topic:NAME, http or cron:\"EXPR\"")
}

fn deploy(api: &Api, a: &DeployArgs) -> Result<()> {
    let (runtime, code) = match (&a.wasm, &a.command, &a.url) {
        (Some(path), None, None) => {
            let code = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            // The WebAssembly text format is compiled here; binary modules pass unchanged.
            let code = wat::parse_bytes(&code).map_err(|e| anyhow!("{}: {e}", path.display()))?.into_owned();
            (RuntimeSpec::Wasm, Some(code))
        }
        (None, Some(command), None) => {
            let mut env = BTreeMap::new();
            for kv in &a.env {
                let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("--env {kv}: expected KEY=VALUE"))?;
                env.insert(k.to_string(), v.to_string());
            }
            (RuntimeSpec::Process { command: command.clone(), env }, None)
        }
        (None, None, Some(url)) => {
            let mode = match a.cloudevents.as_str() {
                "binary" => CloudEventsMode::Binary,
                "structured" => CloudEventsMode::Structured,
                m => bail!("--cloudevents {m}: expected binary or structured"),
            };
            let read =
                |path: &PathBuf| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
            let tls_ca = a.tls_ca.as_ref().map(read).transpose()?;
            (RuntimeSpec::Http { url: url.clone(), mode, tls_ca }, None)
        }
        _ => bail!("give exactly one of --wasm FILE, --command CMD, --url URL"),
    };
    if a.tls_ca.is_some() && a.url.is_none() {
        bail!("--tls-ca is for an HTTP function (--url https://...)");
    }
    let mut spec = FunctionSpec::new(&a.name, runtime, parse_trigger(&a.trigger, a)?);
    spec.output = a.output.clone();
    spec.dlq = a.dlq.clone();
    if let Some(v) = a.batch_size {
        spec.batch_size = v;
    }
    if let Some(v) = a.batch_window_ms {
        spec.batch_window_ms = v;
    }
    if let Some(v) = a.timeout_ms {
        spec.timeout_ms = v;
    }
    if let Some(v) = a.memory_mb {
        spec.memory_mb = v;
    }
    if let Some(v) = a.max_concurrency {
        spec.max_concurrency = v;
    }
    if let Some(v) = a.max_attempts {
        spec.retry.max_attempts = v;
    }
    spec.retry.max_record_age_ms = a.max_record_age_ms;
    spec.retry.bisect = !a.no_bisect;
    spec.ordered = !a.unordered;
    if let Some(v) = a.idle_ms {
        spec.idle_ms = v;
    }
    spec.validate().map_err(|e| anyhow!("{e}"))?;
    let req = DeployRequest { spec, code_base64: code.map(|c| base64::engine::general_purpose::STANDARD.encode(c)) };
    let body = serde_json::to_string(&req)?;
    let r = api.check(
        api.agent.post(&format!("{}/functions", api.base)).set("content-type", "application/json").send_string(&body),
    )?;
    let answer: Json = r.into_json()?;
    println!("deployed {} version {}", a.name, answer["spec"]["version"]);
    Ok(())
}

fn describe_runtime(s: &FunctionSpec) -> String {
    match &s.runtime {
        RuntimeSpec::Wasm => "wasm".into(),
        RuntimeSpec::Process { command, .. } => format!("process: {command}"),
        RuntimeSpec::Http { url, .. } => format!("http: {url}"),
    }
}

fn describe_trigger(s: &FunctionSpec) -> String {
    match &s.trigger {
        Trigger::Topic { topic, .. } => format!("topic:{topic}"),
        Trigger::Http => "http".into(),
        Trigger::Cron { expr } => format!("cron:{expr}"),
    }
}

fn print_status(s: &FunctionStatus) {
    let spec = &s.spec;
    let rows = [
        ("name", spec.name.clone()),
        ("version", spec.version.to_string()),
        ("state", s.state.clone()),
        ("runtime", describe_runtime(spec)),
        ("trigger", describe_trigger(spec)),
        ("output", spec.output.clone().unwrap_or_else(|| "-".into())),
        ("dead letters to", spec.dlq_topic()),
        ("workers", format!("{} (max {})", s.workers, spec.max_concurrency)),
        ("partitions", s.partitions.as_ref().map(|p| format!("{p:?}")).unwrap_or_else(|| "all".into())),
        ("lag", s.lag.to_string()),
        ("processing time per event", format!("{:.1} µs", s.event_us)),
        ("events in / out", format!("{} / {}", s.events_in, s.events_out)),
        ("filtered", s.filtered.to_string()),
        ("invocations", s.invocations.to_string()),
        ("errors", s.errors.to_string()),
        ("retries", s.retries.to_string()),
        ("dead letters", s.dead_letters.to_string()),
        ("cold starts", format!("{} (avg {} µs)", s.cold_starts, s.cold_start_avg_us)),
        ("duration p50/p90/p99", format!("{} / {} / {} ms", s.duration_p50_ms, s.duration_p90_ms, s.duration_p99_ms)),
    ];
    for (k, v) in rows {
        println!("{k:<22} {v}");
    }
}

fn print_log_line(l: &LogLine) {
    let time = chrono::DateTime::from_timestamp_millis(l.timestamp)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    println!("{time} [{}] {}", l.stream, l.line);
}

pub fn run(args: FnArgs) -> Result<()> {
    let api = Api::new(&args.http)?;
    match args.command {
        FnCommand::Deploy(a) => deploy(&api, &a),
        FnCommand::List => {
            let all: Vec<FunctionStatus> = api.get("/functions")?;
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    vec![
                        s.spec.name.clone(),
                        s.spec.version.to_string(),
                        describe_runtime(&s.spec),
                        describe_trigger(&s.spec),
                        s.state.clone(),
                        s.workers.to_string(),
                        s.lag.to_string(),
                    ]
                })
                .collect();
            print!("{}", listing(&["Name", "Version", "Runtime", "Trigger", "State", "Workers", "Lag"], &rows));
            Ok(())
        }
        FnCommand::Status { name, json } => {
            let s: FunctionStatus = api.get(&format!("/functions/{name}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(())
        }
        FnCommand::Logs { name, tail, follow } => {
            let r: LogsResponse = api.get(&format!("/functions/{name}/logs?tail={tail}"))?;
            let mut last = r.lines.last().cloned();
            for l in &r.lines {
                print_log_line(l);
            }
            if !follow {
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let r: LogsResponse = api.get(&format!("/functions/{name}/logs?tail=1000"))?;
                let new = match &last {
                    Some(seen) => match r.lines.iter().rposition(|l| l == seen) {
                        Some(i) => &r.lines[i + 1..],
                        None => &r.lines[..],
                    },
                    None => &r.lines[..],
                };
                for l in new {
                    print_log_line(l);
                }
                if let Some(l) = new.last() {
                    last = Some(l.clone());
                }
            }
        }
        FnCommand::Delete { name } => {
            api.check(api.agent.delete(&format!("{}/functions/{name}", api.base)).call())?;
            println!("deleted {name}");
            Ok(())
        }
        FnCommand::Invoke { name, data, key } => {
            let body = match data {
                Some(d) => d.into_bytes(),
                None => {
                    let mut b = vec![];
                    std::io::stdin().read_to_end(&mut b)?;
                    b
                }
            };
            let mut req = api.agent.post(&format!("{}/functions/{name}/invoke", api.base));
            if let Some(k) = &key {
                req = req.set(KEY_HEADER, k);
            }
            let r = api.check(req.send_bytes(&body))?;
            if r.status() == 204 {
                eprintln!("(no output)");
                return Ok(());
            }
            let mut out = vec![];
            r.into_reader().take(freshet_common::limits::FN_MAX_REPLY_BYTES as u64).read_to_end(&mut out)?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
    }
}
