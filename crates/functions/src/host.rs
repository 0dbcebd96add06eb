//! The function host: deployed functions, their triggers and their worker pools.
//!
//! - Definitions (spec and code) are records of the compacted topic [`FUNCTIONS_TOPIC`], keyed by
//!   name: they survive restarts and live wherever the topics live (embedded or external).
//! - A topic trigger has a controller thread that every [`FN_SCALE_TICK_MS`] looks at each
//!   partition's lag (end offset − position) and queues partitions with a backlog; workers (OS
//!   threads, each owning one runtime instance) take a queued partition, process up to
//!   [`FN_PARTITION_QUANTUM_BATCHES`] batches of it and give it back. The controller starts a
//!   worker when partitions wait and no worker is free, as many as the backlog's processing time
//!   asks for (`wanted_workers`), up to `max_concurrency`; a worker idle for `idle_ms` stops,
//!   so an idle function holds no workers and no instances.
//! - Per batch: read, filter, invoke (retries with backoff, bisection of a failing batch,
//!   partial-batch failures, dead letters), write the outputs and dead letters, then commit the
//!   next offset to the function's consumer group. So delivery is at least once and, with one
//!   worker per partition at a time, in order per partition.
//! - Function output (stderr, guest prints) and invocation errors go to [`LOGS_TOPIC`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use freshet_common::limits::{
    FN_FLUSH_BYTES, FN_FLUSH_INTERVAL_MS, FN_GROUP_HEARTBEAT_MS, FN_LOG_LINE_MAX_BYTES, FN_MAX_CODE_BYTES,
    FN_PARTITION_QUANTUM_BATCHES, FN_READ_CHUNK_EVENTS, FN_SCALE_DRAIN_TARGET_MS, FN_SCALE_TICK_MS,
};
use freshet_common::partitioner::partition_for_key;
use freshet_common::topics::{GroupOffsets, Member, Record, Topics};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Output, Reply};
use crate::filter::Filter;
use crate::metrics::{Metrics, PROMETHEUS_HEADER};
use crate::runtime::{InvokeError, LogSink, Runtime, RuntimeFactory};
use crate::spec::{Deployment, FunctionSpec, Start, Trigger};

/// Function definitions: key = name, value = [`Stored`] JSON, a tombstone on delete.
pub const FUNCTIONS_TOPIC: &str = "_freshet_functions";
/// Function logs: key = function name, value = [`LogLine`] JSON.
pub const LOGS_TOPIC: &str = "_freshet_function_logs";

/// Topics with consumer-group offsets: what the host needs.
pub trait FnTopics: Topics + GroupOffsets {}
impl<T: Topics + GroupOffsets + ?Sized> FnTopics for T {}

/// Makes a function's [`RuntimeFactory`] from its deployment (WASM lives in another crate, so
/// the binary supplies this).
pub trait Loader: Send + Sync {
    fn load(&self, deployment: &Deployment, log: LogSink) -> Result<Arc<dyn RuntimeFactory>, InvokeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("function '{0}' does not exist")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The function itself failed a synchronous invocation.
    #[error("{0}")]
    Function(String),
    #[error("{0}")]
    Server(String),
}

impl From<freshet_common::topics::TopicError> for HostError {
    fn from(e: freshet_common::topics::TopicError) -> HostError {
        HostError::Server(e.0)
    }
}

/// A deployment as kept in [`FUNCTIONS_TOPIC`].
#[derive(Serialize, Deserialize)]
struct Stored {
    spec: FunctionSpec,
    /// Base64 of the code (a WASM module); empty for other runtimes.
    #[serde(default)]
    code: String,
}

/// One line of a function's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub timestamp: i64,
    pub function: String,
    /// "stdout", "stderr" (the function's own output) or "error" (an invocation failed).
    pub stream: String,
    pub line: String,
}

/// What `freshet fn status` and `GET /functions/NAME` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub spec: FunctionSpec,
    /// "running", "waiting for topic T", "failed: ..."
    pub state: String,
    pub workers: i64,
    /// The trigger topic's partitions this host owns in the function's consumer group (`None`:
    /// all, without group membership).
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
    pub lag: i64,
    pub invocations: u64,
    pub errors: u64,
    pub events_in: u64,
    pub events_out: u64,
    pub filtered: u64,
    pub retries: u64,
    pub dead_letters: u64,
    pub cold_starts: u64,
    pub cold_start_avg_us: u64,
    pub duration_p50_ms: f64,
    pub duration_p90_ms: f64,
    pub duration_p99_ms: f64,
    /// The autoscaler's recent processing time per event, µs (0 until measured).
    #[serde(default)]
    pub event_us: f64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host of every deployed function.
pub struct Host {
    topics: Arc<dyn FnTopics>,
    loader: Arc<dyn Loader>,
    running: Mutex<BTreeMap<String, Running>>,
    logs: Arc<LogWriter>,
    log_thread: Mutex<Option<JoinHandle<()>>>,
    /// Held while deploying, deleting or applying definitions: one change at a time.
    changes: Mutex<()>,
    /// The next offset of [`FUNCTIONS_TOPIC`] to apply.
    definitions_at: Mutex<i64>,
    stopping: AtomicBool,
    follower: Mutex<Option<JoinHandle<()>>>,
}

struct Running {
    function: Arc<Function>,
    threads: Vec<JoinHandle<()>>,
}

impl Host {
    /// Opens the host: creates its topics if missing (callers that want configs on them, e.g.
    /// compaction, create them first) and starts every deployed function.
    pub fn open(topics: Arc<dyn FnTopics>, loader: Arc<dyn Loader>) -> Result<Arc<Host>, HostError> {
        for t in [FUNCTIONS_TOPIC, LOGS_TOPIC] {
            if topics.partitions(t).is_none() {
                topics.create_topic(t, 1)?;
            }
        }
        let logs =
            Arc::new(LogWriter { topics: topics.clone(), pending: Mutex::new(vec![]), stop: AtomicBool::new(false) });
        let l = logs.clone();
        let log_thread = std::thread::Builder::new()
            .name("fn-logs".into())
            .spawn(move || l.run())
            .map_err(|e| HostError::Server(format!("cannot start the log writer: {e}")))?;
        let host = Arc::new(Host {
            topics: topics.clone(),
            loader,
            running: Mutex::new(BTreeMap::new()),
            logs,
            log_thread: Mutex::new(Some(log_thread)),
            changes: Mutex::new(()),
            definitions_at: Mutex::new(0),
            stopping: AtomicBool::new(false),
            follower: Mutex::new(None),
        });
        host.sync_definitions()?;
        let h = host.clone();
        let follower = std::thread::Builder::new()
            .name("fn-follow".into())
            .spawn(move || {
                // Every FN_GROUP_HEARTBEAT_MS, in ticks so that a shutdown is not kept waiting.
                let ticks = (FN_GROUP_HEARTBEAT_MS / FN_SCALE_TICK_MS).max(1);
                while !h.stopping.load(Relaxed) {
                    for _ in 0..ticks {
                        if h.stopping.load(Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(FN_SCALE_TICK_MS));
                    }
                    if h.stopping.load(Relaxed) {
                        break;
                    }
                    if let Err(e) = h.sync_definitions() {
                        tracing::warn!(error = %e, "reading function definitions");
                    }
                }
            })
            .map_err(|e| HostError::Server(format!("cannot start the definitions follower: {e}")))?;
        *lock(&host.follower) = Some(follower);
        Ok(host)
    }

    /// Applies the definitions other hosts (or an earlier run) wrote to [`FUNCTIONS_TOPIC`]
    /// since the last call: the latest record per name wins; a version already running is left
    /// alone; a tombstone stops the function.
    fn sync_definitions(&self) -> Result<(), HostError> {
        let _changes = lock(&self.changes);
        let mut at = *lock(&self.definitions_at);
        let mut latest: BTreeMap<String, Option<Deployment>> = BTreeMap::new();
        loop {
            let records = self.topics.read(FUNCTIONS_TOPIC, 0, at, 256)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for c in records {
                let Some(name) = c.record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match c.record.value.as_deref().map(decode_stored) {
                    Some(Ok(d)) => {
                        latest.insert(name, Some(d));
                    }
                    Some(Err(e)) => {
                        tracing::error!(function = %name, error = %e, "skipping an unreadable function definition")
                    }
                    None => {
                        latest.insert(name, None);
                    }
                }
            }
        }
        *lock(&self.definitions_at) = at;
        for (name, d) in latest {
            let running_version = lock(&self.running).get(&name).map(|r| r.function.spec.version);
            match d {
                None => {
                    let old = lock(&self.running).remove(&name);
                    if let Some(r) = old {
                        stop(r);
                    }
                }
                Some(d) if Some(d.spec.version) == running_version => {}
                Some(d) => {
                    let old = lock(&self.running).remove(&name);
                    if let Some(old) = old {
                        stop(old);
                    }
                    let r = match self.load(&d).and_then(|factory| self.start(d.clone(), factory)) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(function = %name, error = %e, "a deployed function cannot start");
                            let f = self.function(d, None);
                            *lock(&f.state) = format!("failed: {e}");
                            Running { function: f, threads: vec![] }
                        }
                    };
                    lock(&self.running).insert(name, r);
                }
            }
        }
        Ok(())
    }

    /// Deploys a function or a new version of it. The old version's workers finish their
    /// batches and commit before the new version starts from the committed offsets, so no
    /// event is lost or processed by both.
    pub fn deploy(&self, mut d: Deployment) -> Result<FunctionSpec, HostError> {
        d.spec.validate().map_err(HostError::Invalid)?;
        if d.code.len() > FN_MAX_CODE_BYTES {
            return Err(HostError::Invalid(format!("function code is larger than {FN_MAX_CODE_BYTES} bytes")));
        }
        let name = d.spec.name.clone();
        let _changes = lock(&self.changes);
        // Loaded (a WASM module compiled) before anything changes, and only once.
        let factory = self.load(&d)?;
        let old = lock(&self.running).remove(&name);
        d.spec.version = old.as_ref().map(|r| r.function.spec.version).unwrap_or(0) + 1;
        let stored = Stored { spec: d.spec.clone(), code: base64::engine::general_purpose::STANDARD.encode(&d.code) };
        let value = serde_json::to_vec(&stored).map_err(|e| HostError::Server(e.to_string()))?;
        let record = Record {
            key: Some(name.clone().into_bytes().into()),
            value: Some(value.into()),
            timestamp: now_ms(),
            headers: vec![],
        };
        if let Err(e) = self.topics.append(FUNCTIONS_TOPIC, 0, vec![record]) {
            if let Some(old) = old {
                lock(&self.running).insert(name, old);
            }
            return Err(e.into());
        }
        if let Some(old) = old {
            stop(old);
        }
        let spec = d.spec.clone();
        let r = self.start(d, factory)?;
        lock(&self.running).insert(name.clone(), r);
        self.logs.push(&name, "info", &format!("deployed version {}", spec.version));
        Ok(spec)
    }

    /// Deletes a function: its workers finish their batches; its definition is removed.
    pub fn delete(&self, name: &str) -> Result<(), HostError> {
        let _changes = lock(&self.changes);
        let r = lock(&self.running).remove(name).ok_or_else(|| HostError::NotFound(name.to_string()))?;
        let record = Record {
            key: Some(Bytes::copy_from_slice(name.as_bytes())),
            value: None,
            timestamp: now_ms(),
            headers: vec![],
        };
        self.topics.append(FUNCTIONS_TOPIC, 0, vec![record])?;
        stop(r);
        Ok(())
    }

    pub fn list(&self) -> Vec<FunctionStatus> {
        lock(&self.running).values().map(|r| r.function.status()).collect()
    }

    pub fn status(&self, name: &str) -> Result<FunctionStatus, HostError> {
        Ok(self.get(name)?.status())
    }

    fn get(&self, name: &str) -> Result<Arc<Function>, HostError> {
        lock(&self.running).get(name).map(|r| r.function.clone()).ok_or_else(|| HostError::NotFound(name.to_string()))
    }

    /// Invokes a function once, synchronously (the HTTP trigger, `freshet fn invoke`): no
    /// retries; outputs are also written to the function's output topics.
    pub fn invoke(&self, name: &str, event: Event) -> Result<Reply, HostError> {
        let f = self.get(name)?;
        if f.factory.is_none() {
            return Err(HostError::Server(lock(&f.state).clone()));
        }
        let mut inst = lock(&f.pool).pop().map(|(i, _)| i);
        f.metrics.events_in.fetch_add(1, Relaxed);
        let batch = [event];
        let result = f.invoke(&mut inst, &batch);
        if let Some(i) = inst {
            lock(&f.pool).push((i, Instant::now()));
        }
        let reply = result.map_err(|e| HostError::Function(format!("function '{name}' failed: {e}")))?;
        f.write(&mut Pending { outputs: reply.outputs.clone(), ..Default::default() }, 0)?;
        Ok(reply)
    }

    /// The last `max` lines of a function's log (read from [`LOGS_TOPIC`]).
    pub fn logs(&self, name: &str, max: usize) -> Result<Vec<LogLine>, HostError> {
        self.logs.flush();
        let end = self.topics.end_offset(LOGS_TOPIC, 0)?;
        // Look back a bounded stretch of the shared log for this function's lines.
        let mut at = (end - (max as i64).saturating_mul(50).max(10_000)).max(0);
        let mut out = VecDeque::new();
        while at < end {
            let records = self.topics.read(LOGS_TOPIC, 0, at, 1024)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for c in records {
                if c.record.key.as_deref() != Some(name.as_bytes()) {
                    continue;
                }
                if let Some(line) = c.record.value.as_deref().and_then(|v| serde_json::from_slice(v).ok()) {
                    out.push_back(line);
                    if out.len() > max {
                        out.pop_front();
                    }
                }
            }
        }
        Ok(out.into())
    }

    /// Prometheus text for every function.
    pub fn metrics(&self) -> String {
        let mut out = String::from(PROMETHEUS_HEADER);
        for (name, r) in lock(&self.running).iter() {
            r.function.metrics.render(name, &mut out);
        }
        out
    }

    /// Stops every function (their workers finish their batches) and flushes the logs.
    pub fn shutdown(&self) {
        self.stopping.store(true, Relaxed);
        if let Some(t) = lock(&self.follower).take() {
            let _ = t.join();
        }
        let _changes = lock(&self.changes);
        let all: Vec<Running> = std::mem::take(&mut *lock(&self.running)).into_values().collect();
        for r in &all {
            r.function.stop.store(true, Relaxed);
            r.function.wake.notify_all();
        }
        for r in all {
            stop(r);
        }
        self.logs.stop.store(true, Relaxed);
        if let Some(t) = lock(&self.log_thread).take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.logs.flush();
    }

    fn function(&self, d: Deployment, factory: Option<Arc<dyn RuntimeFactory>>) -> Arc<Function> {
        let filter = match &d.spec.trigger {
            Trigger::Topic { filter: Some(f), .. } => Filter::new(f).ok(),
            _ => None,
        };
        Arc::new(Function {
            log: self.logs.sink(&d.spec.name),
            logs: self.logs.clone(),
            spec: d.spec,
            factory,
            topics: self.topics.clone(),
            metrics: Metrics::default(),
            stop: AtomicBool::new(false),
            pool: Mutex::new(vec![]),
            parts: Mutex::new(Parts::default()),
            member: Mutex::new(None),
            wake: Condvar::new(),
            filter,
            state: Mutex::new("running".into()),
        })
    }

    fn load(&self, d: &Deployment) -> Result<Arc<dyn RuntimeFactory>, HostError> {
        self.loader.load(d, self.logs.sink(&d.spec.name)).map_err(|e| HostError::Invalid(e.to_string()))
    }

    /// Starts a function's threads (its controller, timer or instance reaper).
    fn start(&self, d: Deployment, factory: Arc<dyn RuntimeFactory>) -> Result<Running, HostError> {
        let name = d.spec.name.clone();
        let f = self.function(d, Some(factory));
        let mut threads = vec![];
        let spawn = |what: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("fn-{what}-{name}"))
                .spawn(body)
                .map_err(|e| HostError::Server(format!("cannot start a thread: {e}")))
        };
        let f2 = f.clone();
        match &f.spec.trigger {
            Trigger::Topic { .. } => threads.push(spawn("ctl", Box::new(move || f2.control()))?),
            Trigger::Cron { .. } => threads.push(spawn("cron", Box::new(move || f2.cron()))?),
            Trigger::Http => threads.push(spawn("ctl", Box::new(move || f2.reap_only()))?),
        }
        Ok(Running { function: f, threads })
    }
}

fn stop(r: Running) {
    r.function.stop.store(true, Relaxed);
    r.function.wake.notify_all();
    for t in r.threads {
        let _ = t.join();
    }
}

fn decode_stored(v: &[u8]) -> Result<Deployment, String> {
    let s: Stored = serde_json::from_slice(v).map_err(|e| e.to_string())?;
    let code = base64::engine::general_purpose::STANDARD.decode(s.code.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Deployment { spec: s.spec, code })
}

/// How many workers a topic trigger's pool should have: enough to process `lag` events within
/// [`FN_SCALE_DRAIN_TARGET_MS`] at `cost_us` per event (at least one while there is a backlog),
/// or, while the processing time is not known yet, one per partition with a backlog; never more
/// than the partitions with a backlog (`backlogged`, each processed by one worker at a time)
/// nor `max`.
fn wanted_workers(lag: i64, cost_us: Option<f64>, backlogged: usize, max: usize) -> usize {
    if lag <= 0 || backlogged == 0 {
        return 0;
    }
    let by_time = match cost_us {
        Some(c) => ((lag as f64 * c) / (FN_SCALE_DRAIN_TARGET_MS as f64 * 1000.0)).ceil().max(1.0),
        None => f64::INFINITY,
    };
    (by_time.min(backlogged as f64) as usize).min(max)
}

/// Per partition of a topic trigger.
#[derive(Default)]
struct Parts {
    /// Next offset to process; -1 until known.
    positions: Vec<i64>,
    busy: Vec<bool>,
    ready: VecDeque<i32>,
    /// The partitions this host owns in the function's consumer group (`None`: every partition,
    /// when the topics have no group membership), and those the group took away that a worker
    /// still holds (released once its batch is committed).
    owned: Option<std::collections::BTreeSet<i32>>,
    revoking: std::collections::BTreeSet<i32>,
    /// Worker threads alive, and how many of them wait for a partition.
    workers: usize,
    idle: usize,
    handles: Vec<JoinHandle<()>>,
    /// The (invocation µs, events) totals the controller last looked at; the processing time
    /// per event it derives is kept in `Metrics::event_cost_ns`.
    seen: (u64, u64),
}

impl Parts {
    /// Whether this host may process partition `p` now: owned and not being revoked.
    fn mine(&self, p: i32) -> bool {
        self.owned.as_ref().is_none_or(|o| o.contains(&p)) && !self.revoking.contains(&p)
    }
}

/// The controller's side of the group membership.
struct Membership {
    /// False once the topics said they have none (one owner of every partition).
    supported: bool,
    member: Member,
    last: Option<Instant>,
}

/// One running version of a function.
struct Function {
    spec: FunctionSpec,
    factory: Option<Arc<dyn RuntimeFactory>>,
    topics: Arc<dyn FnTopics>,
    metrics: Metrics,
    stop: AtomicBool,
    /// Idle instances (HTTP invocations, extra lanes of unordered batches) and since when.
    pool: Mutex<Vec<(Box<dyn Runtime>, Instant)>>,
    parts: Mutex<Parts>,
    /// This host's membership in the function's consumer group (`None` without membership).
    member: Mutex<Option<Member>>,
    /// Wakes workers waiting for a partition, and the controller on stop.
    wake: Condvar,
    filter: Option<Filter>,
    log: LogSink,
    logs: Arc<LogWriter>,
    state: Mutex<String>,
}

/// What a worker ran but has not written and committed yet, and the batch it runs. A worker
/// keeps one from drain to drain, so that these allocations are reused.
#[derive(Default)]
struct Pending {
    /// The batch being run (empty between batches).
    batch: Vec<Event>,
    outputs: Vec<Output>,
    dead: Vec<(Event, String, u32)>,
    /// The offset to commit once these are written (`None`: nothing pending).
    next: Option<i64>,
    /// When the first of these batches ran.
    since: Option<Instant>,
    /// Bytes of the keys and values of `outputs`.
    bytes: usize,
    /// Where each output goes, and per topic the records per partition, filled by `write`
    /// (empty between flushes: kept for their allocations).
    routes: Vec<Option<(usize, usize)>>,
    targets: Vec<(String, Vec<Vec<Record>>)>,
}

impl Pending {
    /// Forgets what is pending (abandoned), keeping the allocations.
    fn clear(&mut self) {
        self.batch.clear();
        self.outputs.clear();
        self.dead.clear();
        self.next = None;
        self.since = None;
        self.bytes = 0;
    }
}

/// How a batch ended.
enum Outcome {
    /// Outputs to write and events to dead-letter (with error and attempts).
    Done { outputs: Vec<Output>, dead: Vec<(Event, String, u32)> },
    /// The function is stopping: nothing is written or committed; the batch runs again later.
    Abandoned,
}

impl Function {
    fn status(&self) -> FunctionStatus {
        let m = &self.metrics;
        let cold = m.cold_starts.load(Relaxed);
        // One lock at a time (a guard in a struct literal would live to its end).
        let state = lock(&self.state).clone();
        let partitions = {
            let parts = lock(&self.parts);
            parts.owned.as_ref().map(|o| o.iter().copied().filter(|p| !parts.revoking.contains(p)).collect())
        };
        FunctionStatus {
            spec: self.spec.clone(),
            state,
            workers: m.workers.load(Relaxed),
            partitions,
            lag: m.lag.load(Relaxed),
            invocations: m.invocations.load(Relaxed),
            errors: m.errors.load(Relaxed),
            events_in: m.events_in.load(Relaxed),
            events_out: m.events_out.load(Relaxed),
            filtered: m.filtered.load(Relaxed),
            retries: m.retries.load(Relaxed),
            dead_letters: m.dead_letters.load(Relaxed),
            cold_starts: cold,
            cold_start_avg_us: m.cold_start_us_total.load(Relaxed).checked_div(cold).unwrap_or(0),
            duration_p50_ms: m.percentile_ms(0.5),
            duration_p90_ms: m.percentile_ms(0.9),
            duration_p99_ms: m.percentile_ms(0.99),
            event_us: m.event_cost_ns.load(Relaxed) as f64 / 1000.0,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Sleeps up to `d`, returning early (false) when the function stops.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut parts = lock(&self.parts);
        while !self.stopping() {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            parts = self.wake.wait_timeout(parts, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        false
    }

    fn instances_gauge(&self) {
        let workers = lock(&self.parts).workers;
        let pooled = lock(&self.pool).len();
        self.metrics.workers.store((workers + pooled) as i64, Relaxed);
    }

    /// Drops pooled instances idle for longer than `idle_ms`.
    fn reap(&self) {
        let idle = Duration::from_millis(self.spec.idle_ms);
        lock(&self.pool).retain(|(_, since)| since.elapsed() < idle);
        self.instances_gauge();
    }

    fn reap_only(self: Arc<Self>) {
        while self.sleep(Duration::from_millis(FN_SCALE_TICK_MS)) {
            self.reap();
        }
    }

    // ---- Topic trigger: controller and workers -----------------------------------------------

    fn trigger_topic(&self) -> (&str, Start) {
        match &self.spec.trigger {
            Trigger::Topic { topic, start, .. } => (topic, *start),
            _ => unreachable!("only topic triggers have a controller"),
        }
    }

    /// Where a partition starts: the group's committed offset, else the trigger's start.
    fn initial_position(&self, partition: i32, committed: &BTreeMap<i32, i64>) -> Result<i64, HostError> {
        if let Some(o) = committed.get(&partition) {
            return Ok(*o);
        }
        let (topic, start) = self.trigger_topic();
        Ok(match start {
            Start::Earliest => 0,
            Start::Latest => self.topics.end_offset(topic, partition)?,
            Start::Timestamp(ts) => self.topics.offset_for_time(topic, partition, ts)?,
        })
    }

    fn control(self: Arc<Self>) {
        let topic = self.trigger_topic().0.to_string();
        let group = self.spec.group();
        let tick = Duration::from_millis(FN_SCALE_TICK_MS);
        let mut membership = Membership { supported: true, member: Member::default(), last: None };
        loop {
            if self.stopping() {
                break;
            }
            if let Err(e) = self.control_tick(&topic, &group, &mut membership) {
                *lock(&self.state) = format!("error: {e}");
                tracing::warn!(function = %self.spec.name, error = %e, "function controller");
            }
            self.reap();
            if !self.sleep(tick) {
                break;
            }
        }
        // Workers see the stop flag, finish their batch and exit.
        self.wake.notify_all();
        let handles = std::mem::take(&mut lock(&self.parts).handles);
        for h in handles {
            let _ = h.join();
        }
        lock(&self.pool).clear();
        self.instances_gauge();
        // Leave the group: its partitions go to the other hosts (or the next version) at once.
        if membership.member.epoch > 0 {
            if let Err(e) = self.topics.leave(&group, &membership.member) {
                tracing::debug!(function = %self.spec.name, error = %e, "leaving the consumer group");
            }
        }
    }

    /// Heartbeats in the function's consumer group when due: releases revoked partitions no
    /// worker holds any more, reports what it owns, and takes the group's assignment.
    fn heartbeat(&self, topic: &str, group: &str, m: &mut Membership) -> Result<(), HostError> {
        let due = m.member.epoch == 0
            || !lock(&self.parts).revoking.is_empty()
            || m.last.is_none_or(|t| t.elapsed() >= Duration::from_millis(FN_GROUP_HEARTBEAT_MS));
        if !m.supported || !due {
            return Ok(());
        }
        let owned: Vec<i32> = {
            let mut parts = lock(&self.parts);
            let parts = &mut *parts;
            let released: Vec<i32> = parts
                .revoking
                .iter()
                .copied()
                .filter(|p| !parts.busy.get(*p as usize).copied().unwrap_or(false))
                .collect();
            for p in released {
                parts.revoking.remove(&p);
                if let Some(o) = parts.owned.as_mut() {
                    o.remove(&p);
                }
                if let Some(pos) = parts.positions.get_mut(p as usize) {
                    *pos = -1;
                }
            }
            parts.owned.iter().flatten().copied().collect()
        };
        m.last = Some(Instant::now());
        match self.topics.heartbeat(group, topic, &mut m.member, &owned) {
            Ok(None) if m.member.epoch == 0 => {
                // No membership in these topics: this host owns every partition.
                m.supported = false;
                *lock(&self.member) = None;
                lock(&self.parts).owned = None;
            }
            Ok(assigned) => {
                *lock(&self.member) = Some(m.member.clone());
                if let Some(assigned) = assigned {
                    let assigned: std::collections::BTreeSet<i32> = assigned.into_iter().collect();
                    let mut parts = lock(&self.parts);
                    let owned = parts.owned.get_or_insert_with(Default::default);
                    let revoked: Vec<i32> = owned.difference(&assigned).copied().collect();
                    owned.extend(assigned.iter().copied());
                    parts.revoking.extend(revoked.iter().copied());
                    parts.ready.retain(|p| !revoked.contains(p));
                }
            }
            Err(e) => {
                // Fenced or unknown: everything owned is gone; join again.
                tracing::info!(function = %self.spec.name, error = %e, "rejoining the consumer group");
                m.member = Member::default();
                *lock(&self.member) = None;
                let mut parts = lock(&self.parts);
                let all: Vec<i32> = parts.owned.iter().flatten().copied().collect();
                parts.revoking.extend(all);
                parts.ready.clear();
            }
        }
        Ok(())
    }

    fn control_tick(self: &Arc<Self>, topic: &str, group: &str, m: &mut Membership) -> Result<(), HostError> {
        let Some(n) = self.topics.partitions(topic) else {
            *lock(&self.state) = format!("waiting for topic {topic}");
            return Ok(());
        };
        let n = n.max(0) as usize;
        {
            let mut parts = lock(&self.parts);
            if parts.positions.len() < n {
                parts.positions.resize(n, -1);
                parts.busy.resize(n, false);
            }
        }
        self.heartbeat(topic, group, m)?;
        *lock(&self.state) = "running".into();
        let unknown: Vec<i32> = {
            let parts = lock(&self.parts);
            (0..n as i32).filter(|p| parts.mine(*p) && parts.positions[*p as usize] < 0).collect()
        };
        if !unknown.is_empty() {
            let committed = self.topics.committed(group, topic)?;
            for p in unknown {
                let pos = self.initial_position(p, &committed)?;
                lock(&self.parts).positions[p as usize] = pos;
            }
        }
        let mine: Vec<i32> = {
            let parts = lock(&self.parts);
            (0..n as i32).filter(|p| parts.mine(*p) && parts.positions[*p as usize] >= 0).collect()
        };
        let mut ends = Vec::with_capacity(mine.len());
        for p in &mine {
            ends.push((*p as usize, self.topics.end_offset(topic, *p)?));
        }
        let mut parts = lock(&self.parts);
        let mut lag = 0;
        for (p, end) in ends {
            if !parts.mine(p as i32) {
                continue;
            }
            let behind = (end - parts.positions[p]).max(0);
            lag += behind;
            if behind > 0 && !parts.busy[p] && !parts.ready.contains(&(p as i32)) {
                parts.ready.push_back(p as i32);
            }
        }
        self.metrics.lag.store(lag, Relaxed);
        // Processing time per event over the last tick, averaged with the earlier estimate.
        let (busy_us, events) = self.metrics.busy();
        let (d_busy, d_events) = (busy_us.saturating_sub(parts.seen.0), events.saturating_sub(parts.seen.1));
        parts.seen = (busy_us, events);
        if d_events > 0 {
            let now = d_busy as f64 * 1000.0 / d_events as f64;
            let ns = match self.metrics.event_cost_ns.load(Relaxed) {
                0 => now,
                before => (before as f64 + now) / 2.0,
            };
            // At least 1: 0 means "not measured yet".
            self.metrics.event_cost_ns.store(ns.max(1.0) as u64, Relaxed);
        }
        // Scale up: a worker per waiting partition that no idle worker will take, as far as the
        // backlog's processing time asks for more workers (0: not measured yet).
        let cost_us = match self.metrics.event_cost_ns.load(Relaxed) {
            0 => None,
            ns => Some(ns as f64 / 1000.0),
        };
        let backlogged = parts.ready.len() + parts.busy.iter().filter(|b| **b).count();
        let target = wanted_workers(lag, cost_us, backlogged, self.spec.max_concurrency as usize);
        let wanted = parts.ready.len().saturating_sub(parts.idle).min(target.saturating_sub(parts.workers));
        let room = (self.spec.max_concurrency as usize).saturating_sub(parts.workers);
        for _ in 0..wanted.min(room) {
            let f = self.clone();
            match std::thread::Builder::new().name(format!("fn-w-{}", self.spec.name)).spawn(move || f.work()) {
                Ok(h) => {
                    parts.workers += 1;
                    parts.handles.push(h);
                }
                Err(e) => {
                    tracing::error!(function = %self.spec.name, error = %e, "cannot start a worker");
                    break;
                }
            }
        }
        parts.handles.retain(|h| !h.is_finished());
        if !parts.ready.is_empty() {
            self.wake.notify_all();
        }
        drop(parts);
        self.instances_gauge();
        Ok(())
    }

    fn work(self: Arc<Self>) {
        let mut inst: Option<Box<dyn Runtime>> = None;
        // Kept from drain to drain: their allocations are reused, not made afresh each time.
        let mut pending = Pending::default();
        let idle = Duration::from_millis(self.spec.idle_ms);
        let mut idle_since = Instant::now();
        loop {
            let partition = {
                let mut parts = lock(&self.parts);
                loop {
                    if self.stopping() {
                        break None;
                    }
                    if let Some(p) = parts.ready.pop_front() {
                        parts.busy[p as usize] = true;
                        break Some(p);
                    }
                    let waited = idle_since.elapsed();
                    if waited >= idle {
                        break None;
                    }
                    parts.idle += 1;
                    parts = self.wake.wait_timeout(parts, idle - waited).unwrap_or_else(|e| e.into_inner()).0;
                    parts.idle -= 1;
                }
            };
            let Some(p) = partition else { break };
            let result = self.drain(p, &mut inst, &mut pending);
            lock(&self.parts).busy[p as usize] = false;
            idle_since = Instant::now();
            if let Err(e) = result {
                self.logs.push(&self.spec.name, "error", &format!("partition {p}: {e}"));
                tracing::warn!(function = %self.spec.name, partition = p, error = %e, "function batch not committed");
                self.sleep(Duration::from_millis(self.spec.retry.backoff_initial_ms.max(FN_SCALE_TICK_MS)));
            }
        }
        drop(inst);
        lock(&self.parts).workers -= 1;
        self.instances_gauge();
    }

    /// Processes up to a quantum of batches of one partition. Events are read in chunks of up
    /// to [`FN_READ_CHUNK_EVENTS`] and invoked `batch_size` at a time; the outputs of the batches
    /// run within [`FN_FLUSH_INTERVAL_MS`] (across chunks) are written together, then their
    /// offsets committed once (fewer fsyncs for fast functions, at most that much added output
    /// latency). What is not flushed yet is flushed before the worker waits or lets the
    /// partition go; a stop abandons it (not written, not committed: it runs again).
    fn drain(&self, p: i32, inst: &mut Option<Box<dyn Runtime>>, pending: &mut Pending) -> Result<(), HostError> {
        // One allocation of the topic name, shared by every event read.
        let topic: Arc<str> = Arc::from(self.trigger_topic().0);
        let group = self.spec.group();
        let batch_size = self.spec.batch_size;
        let chunk = batch_size.max(FN_READ_CHUNK_EVENTS);
        let interval = Duration::from_millis(FN_FLUSH_INTERVAL_MS);
        let mut batches = 0;
        // Where the next read starts: ahead of the committed position while outputs wait.
        let mut pos = {
            let parts = lock(&self.parts);
            if !parts.mine(p) {
                return Ok(());
            }
            parts.positions[p as usize]
        };
        // Whatever an earlier drain abandoned is dropped.
        pending.clear();
        loop {
            if self.stopping() || batches >= FN_PARTITION_QUANTUM_BATCHES || !lock(&self.parts).mine(p) {
                // Stopping (what ran to the end is written), the quantum is used up, or the
                // group gave the partition to another host.
                self.flush(&group, &topic, p, pending)?;
                return Ok(());
            }
            let mut read = self.topics.read(&topic, p, pos, chunk)?;
            if read.len() < batch_size && self.spec.batch_window_ms > 0 {
                // Wait for the window to fill the batch (what is done is written first).
                if !self.flush(&group, &topic, p, pending)? {
                    return Ok(());
                }
                if read.is_empty() {
                    return Ok(());
                }
                if !self.sleep(Duration::from_millis(self.spec.batch_window_ms)) {
                    return Ok(());
                }
                read = self.topics.read(&topic, p, pos, chunk)?;
            }
            if read.is_empty() {
                // Caught up: write what is done.
                self.flush(&group, &topic, p, pending)?;
                return Ok(());
            }
            let mut events = read.into_iter().map(|c| Event {
                topic: topic.clone(),
                partition: c.partition,
                offset: c.offset,
                timestamp: c.record.timestamp,
                key: c.record.key,
                value: c.record.value,
                headers: c.record.headers,
            });
            loop {
                let batch = &mut pending.batch;
                batch.clear();
                batch.extend(events.by_ref().take(batch_size));
                let Some(last) = batch.last() else { break };
                let next = last.offset + 1;
                batches += 1;
                let total = batch.len();
                if let Some(f) = &self.filter {
                    batch.retain(|e| f.matches(e.value.as_deref()));
                }
                self.metrics.filtered.fetch_add((total - batch.len()) as u64, Relaxed);
                let started = *pending.since.get_or_insert_with(Instant::now);
                let outputs_before = pending.outputs.len();
                if !batch.is_empty() {
                    self.metrics.events_in.fetch_add(batch.len() as u64, Relaxed);
                    let done = if self.spec.ordered {
                        // Outputs straight into the pending ones (no vector per batch).
                        self.process_into(inst, batch, &mut pending.outputs, &mut pending.dead)
                    } else {
                        match self.process_by_key(inst, std::mem::take(batch)) {
                            Outcome::Abandoned => false,
                            Outcome::Done { outputs, dead } => {
                                pending.outputs.extend(outputs);
                                pending.dead.extend(dead);
                                true
                            }
                        }
                    };
                    // The events hold slices of the read buffer: let it go.
                    pending.batch.clear();
                    if !done {
                        // Nothing unflushed is written or committed.
                        return Ok(());
                    }
                }
                pending.next = Some(next);
                pos = next;
                pending.bytes += pending.outputs[outputs_before..]
                    .iter()
                    .map(|o| o.key.as_ref().map_or(0, |k| k.len()) + o.value.as_ref().map_or(0, |v| v.len()))
                    .sum::<usize>();
                if self.stopping() || batches >= FN_PARTITION_QUANTUM_BATCHES {
                    break;
                }
                // Written while the outputs are recent (still in the CPU's caches, and the
                // buffer they are encoded into small enough to be kept), or when they have
                // waited long enough.
                let due = pending.bytes >= FN_FLUSH_BYTES || started.elapsed() >= interval;
                if due && !self.flush(&group, &topic, p, pending)? {
                    return Ok(());
                }
            }
        }
    }

    /// Writes the pending outputs and dead letters, then commits the offset they reach; false
    /// when the partition is no longer this host's.
    fn flush(&self, group: &str, topic: &str, p: i32, pending: &mut Pending) -> Result<bool, HostError> {
        let Some(next) = pending.next.take() else { return Ok(lock(&self.parts).mine(p)) };
        pending.since = None;
        pending.bytes = 0;
        self.write(pending, p)?;
        let member = lock(&self.member).clone();
        self.topics.commit(group, topic, &[(p, next)], member.as_ref())?;
        let mut parts = lock(&self.parts);
        parts.positions[p as usize] = next;
        Ok(parts.mine(p))
    }

    /// Unordered functions: a batch's events are split by key into lanes (at most
    /// `max_concurrency`) that run at once, each lane in order, each with its own instance.
    fn process_by_key(&self, inst: &mut Option<Box<dyn Runtime>>, events: Vec<Event>) -> Outcome {
        let lanes = (self.spec.max_concurrency as usize).min(events.len()).max(1);
        if lanes == 1 {
            return self.process(inst, &events);
        }
        let mut split: Vec<Vec<Event>> = vec![vec![]; lanes];
        for e in events {
            let lane = match &e.key {
                Some(k) => partition_for_key(k, lanes as i32) as usize,
                None => (e.offset as usize) % lanes,
            };
            split[lane].push(e);
        }
        split.retain(|l| !l.is_empty());
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let mut handles = vec![];
            let mut first = Some(inst);
            for lane in &split {
                let taken = first.take();
                handles.push(s.spawn(move || match taken {
                    Some(inst) => self.process(inst, lane),
                    None => {
                        let mut own = lock(&self.pool).pop().map(|(i, _)| i);
                        let out = self.process(&mut own, lane);
                        if let Some(i) = own {
                            lock(&self.pool).push((i, Instant::now()));
                        }
                        out
                    }
                }));
            }
            handles.into_iter().map(|h| h.join().unwrap_or(Outcome::Abandoned)).collect()
        });
        let mut outputs = vec![];
        let mut dead = vec![];
        for o in outcomes {
            match o {
                Outcome::Abandoned => return Outcome::Abandoned,
                Outcome::Done { outputs: o, dead: d } => {
                    outputs.extend(o);
                    dead.extend(d);
                }
            }
        }
        Outcome::Done { outputs, dead }
    }

    /// One invocation, with metrics; a new instance when there is none (a cold start) and the
    /// instance dropped when it is no longer healthy.
    fn invoke(&self, inst: &mut Option<Box<dyn Runtime>>, batch: &[Event]) -> Result<Reply, InvokeError> {
        let factory = self.factory.as_ref().ok_or_else(|| InvokeError::Start(lock(&self.state).clone()))?;
        if inst.is_none() {
            let t = Instant::now();
            *inst = Some(factory.instantiate()?);
            self.metrics.observe_cold_start(t.elapsed().as_micros() as u64);
        }
        let Some(i) = inst.as_mut() else { unreachable!() };
        let t = Instant::now();
        let result = i.invoke(batch);
        let us = t.elapsed().as_micros() as u64;
        let healthy = i.healthy();
        if !healthy {
            *inst = None;
        }
        let failed = match &result {
            Ok(r) => !r.failed.is_empty(),
            Err(_) => true,
        };
        self.metrics.observe_invocation(us, batch.len(), failed);
        match &result {
            Err(e) => (self.log)("error", &format!("invocation of {} events failed: {e}", batch.len())),
            Ok(r) => {
                for f in &r.failed {
                    let at = batch.get(f.index).map(|e| format!("{}-{}@{}", e.topic, e.partition, e.offset));
                    (self.log)(
                        "error",
                        &format!("event {} failed: {}", at.unwrap_or_else(|| f.index.to_string()), f.error),
                    );
                }
            }
        }
        result
    }

    /// Runs a batch to the end: retries failing events with backoff, bisects a batch that fails
    /// as a whole, and gives up on an event after `max_attempts` or `max_record_age_ms`.
    fn process(&self, inst: &mut Option<Box<dyn Runtime>>, batch: &[Event]) -> Outcome {
        let mut outputs = vec![];
        let mut dead = vec![];
        if self.process_into(inst, batch, &mut outputs, &mut dead) {
            Outcome::Done { outputs, dead }
        } else {
            Outcome::Abandoned
        }
    }

    /// [`Function::process`] adding the batch's outputs and dead letters to `outputs` and
    /// `dead`; false when abandoned (then they are left as they were).
    fn process_into(
        &self,
        inst: &mut Option<Box<dyn Runtime>>,
        batch: &[Event],
        outputs: &mut Vec<Output>,
        dead: &mut Vec<(Event, String, u32)>,
    ) -> bool {
        let (n_out, n_dead) = (outputs.len(), dead.len());
        let all: Vec<usize> = (0..batch.len()).collect();
        if self.attempt(inst, batch, &all, 1, outputs, dead) {
            true
        } else {
            outputs.truncate(n_out);
            dead.truncate(n_dead);
            false
        }
    }

    /// Tries `which` events of `batch` (attempt number `attempt`); false when abandoned.
    fn attempt(
        &self,
        inst: &mut Option<Box<dyn Runtime>>,
        batch: &[Event],
        which: &[usize],
        attempt: u32,
        outputs: &mut Vec<Output>,
        dead: &mut Vec<(Event, String, u32)>,
    ) -> bool {
        // The whole batch is passed as it is; a subset (retries, halves) is copied.
        let subset: Vec<Event>;
        let events: &[Event] = if which.len() == batch.len() {
            batch
        } else {
            subset = which.iter().map(|i| batch[*i].clone()).collect();
            &subset
        };
        let failed: Vec<(usize, String)> = match self.invoke(inst, events) {
            Ok(reply) => {
                outputs.extend(reply.outputs);
                let mut failed: Vec<(usize, String)> = reply
                    .failed
                    .into_iter()
                    .filter(|f| f.index < which.len())
                    .map(|f| (which[f.index], f.error))
                    .collect();
                failed.sort_by_key(|f| f.0);
                failed.dedup_by_key(|f| f.0);
                failed
            }
            Err(_) if which.len() > 1 && self.spec.retry.bisect => {
                let (left, right) = which.split_at(which.len() / 2);
                return self.attempt(inst, batch, left, attempt, outputs, dead)
                    && self.attempt(inst, batch, right, attempt, outputs, dead);
            }
            Err(e) => which.iter().map(|i| (*i, e.to_string())).collect(),
        };
        if failed.is_empty() {
            return true;
        }
        let retry = &self.spec.retry;
        let now = now_ms();
        let mut again = vec![];
        let mut last_error = String::new();
        for (i, error) in failed {
            let too_old = retry.max_record_age_ms.is_some_and(|age| now - batch[i].timestamp > age as i64);
            if attempt >= retry.max_attempts || too_old {
                self.metrics.dead_letters.fetch_add(1, Relaxed);
                dead.push((batch[i].clone(), error, attempt));
            } else {
                again.push(i);
                last_error = error;
            }
        }
        if again.is_empty() {
            return true;
        }
        tracing::debug!(function = %self.spec.name, events = again.len(), attempt, error = %last_error, "retrying");
        self.metrics.retries.fetch_add(again.len() as u64, Relaxed);
        if !self.sleep(Duration::from_millis(retry.backoff_ms(attempt))) {
            return false;
        }
        self.attempt(inst, batch, &again, attempt + 1, outputs, dead)
    }

    /// Writes the pending outputs (by key to a partition of their topic; keyless ones to
    /// `partition`) and dead letters (to the source partition of the dead-letter topic),
    /// creating topics that do not exist yet. Outputs are moved, not copied; `pending`'s
    /// outputs, routes and per-partition records are left empty, their allocations kept for the
    /// next flush. Each topic's partitions are appended together (their fsyncs overlap).
    fn write(&self, pending: &mut Pending, partition: i32) -> Result<(), HostError> {
        let Pending { outputs, dead, routes, targets, .. } = pending;
        let dead = std::mem::take(dead);
        // Per topic, records per partition: a topic is looked up once per flush, not once per
        // record. Nearly always one topic: a list searched from the last one used beats hashing
        // each output's topic name. First where each output goes, counted per partition; then
        // each partition's records in a vector of the right size (not grown record by record).
        // Topics from an earlier flush stay listed (with empty vectors) while they exist.
        targets.retain_mut(|t| match self.topics.partitions(&t.0) {
            Some(n) => {
                t.1.resize_with(n.max(1) as usize, Vec::new);
                true
            }
            None => false,
        });
        let mut counts: Vec<Vec<usize>> = targets.iter().map(|t| vec![0; t.1.len()]).collect();
        routes.clear();
        routes.reserve(outputs.len());
        let mut last = usize::MAX;
        let mut unrouted = 0;
        for o in outputs.iter() {
            let Some(topic) = o.topic.as_deref().or(self.spec.output.as_deref()) else {
                unrouted += 1;
                routes.push(None);
                continue;
            };
            if targets.get(last).is_none_or(|t| t.0 != topic) {
                last = match targets.iter().position(|t| t.0 == topic) {
                    Some(i) => i,
                    None => {
                        let n = self.ensure_topic(topic)? as usize;
                        targets.push((topic.to_string(), (0..n).map(|_| Vec::new()).collect()));
                        counts.push(vec![0; n]);
                        targets.len() - 1
                    }
                };
            }
            let c = &mut counts[last];
            let p = match &o.key {
                Some(k) => partition_for_key(k, c.len() as i32),
                None => partition.rem_euclid(c.len() as i32),
            } as usize;
            c[p] += 1;
            routes.push(Some((last, p)));
        }
        for (t, c) in targets.iter_mut().zip(&counts) {
            for (records, n) in t.1.iter_mut().zip(c) {
                records.clear();
                records.reserve(*n);
            }
        }
        let now = now_ms();
        for (o, route) in outputs.drain(..).zip(routes.drain(..)) {
            if let Some((t, p)) = route {
                targets[t].1[p].push(Record { key: o.key, value: o.value, timestamp: now, headers: o.headers });
            }
        }
        if unrouted > 0 {
            (self.log)("error", &format!("{unrouted} outputs dropped: the function has no output topic"));
        }
        let dlq = self.spec.dlq_topic();
        if !dead.is_empty() {
            let n = self.ensure_topic(&dlq)?;
            let i = match targets.iter().position(|t| t.0 == dlq) {
                Some(i) => i,
                None => {
                    targets.push((dlq.clone(), vec![vec![]; n as usize]));
                    targets.len() - 1
                }
            };
            let parts = &mut targets[i].1;
            let n = parts.len() as i32;
            for (e, error, attempts) in dead {
                let mut headers = e.headers;
                let mut h = |k: &str, v: String| headers.push((k.to_string(), Some(v.into_bytes())));
                h("freshet.function", self.spec.name.clone());
                h("freshet.error", error);
                h("freshet.attempts", attempts.to_string());
                h("freshet.source.topic", e.topic.to_string());
                h("freshet.source.partition", e.partition.to_string());
                h("freshet.source.offset", e.offset.to_string());
                let record = Record { key: e.key, value: e.value, timestamp: e.timestamp, headers };
                parts[e.partition.max(0).rem_euclid(n) as usize].push(record);
            }
        }
        let result = (|| -> Result<(), HostError> {
            for (topic, partitions) in targets.iter_mut() {
                let count: usize = partitions.iter().map(Vec::len).sum();
                if count == 0 {
                    continue;
                }
                self.topics.append_partitions(topic, partitions)?;
                if *topic != dlq {
                    self.metrics.events_out.fetch_add(count as u64, Relaxed);
                }
            }
            Ok(())
        })();
        if result.is_err() {
            // Nothing of this flush is kept (it runs again).
            for (_, partitions) in targets.iter_mut() {
                partitions.iter_mut().for_each(Vec::clear);
            }
        }
        result
    }

    /// The partitions of a topic the function writes to, created (with as many partitions as
    /// the trigger topic) if it does not exist.
    fn ensure_topic(&self, topic: &str) -> Result<i32, HostError> {
        if let Some(n) = self.topics.partitions(topic) {
            return Ok(n.max(1));
        }
        let n = match &self.spec.trigger {
            Trigger::Topic { topic: t, .. } => self.topics.partitions(t).unwrap_or(1).max(1),
            _ => 1,
        };
        self.topics.create_topic(topic, n)?;
        Ok(self.topics.partitions(topic).unwrap_or(n).max(1))
    }

    // ---- Timer trigger -------------------------------------------------------------------------

    fn cron(self: Arc<Self>) {
        let Trigger::Cron { expr } = &self.spec.trigger else { return };
        let schedule = match crate::cron::Schedule::parse(expr) {
            Ok(s) => s,
            Err(e) => {
                *lock(&self.state) = format!("failed: {e}");
                return;
            }
        };
        let mut inst = None;
        let mut last_used = Instant::now();
        while !self.stopping() {
            let now = now_ms();
            let Some(next) = schedule.next_after(now) else {
                *lock(&self.state) = "schedule has no future times".into();
                break;
            };
            // Wake at least every tick to drop an idle instance.
            let wait = ((next - now).max(0) as u64).min(FN_SCALE_TICK_MS);
            if !self.sleep(Duration::from_millis(wait)) {
                break;
            }
            if last_used.elapsed() >= Duration::from_millis(self.spec.idle_ms) && inst.is_some() {
                inst = None;
                lock(&self.parts).workers = 0;
                self.instances_gauge();
            }
            if now_ms() < next {
                continue;
            }
            let scheduled = chrono::DateTime::from_timestamp_millis(next).map(|t| t.to_rfc3339()).unwrap_or_default();
            let event = Event {
                topic: Arc::default(),
                partition: -1,
                offset: -1,
                timestamp: next,
                key: Some(self.spec.name.clone().into_bytes().into()),
                value: Some(serde_json::json!({ "scheduled_time": scheduled }).to_string().into_bytes().into()),
                headers: vec![],
            };
            self.metrics.events_in.fetch_add(1, Relaxed);
            lock(&self.parts).workers = 1;
            self.instances_gauge();
            if let Outcome::Done { outputs, dead } = self.process(&mut inst, &[event]) {
                if let Err(e) = self.write(&mut Pending { outputs, dead, ..Default::default() }, 0) {
                    (self.log)("error", &format!("writing the outputs of the run at {scheduled}: {e}"));
                }
            }
            last_used = Instant::now();
        }
        lock(&self.parts).workers = 0;
        self.instances_gauge();
    }
}

/// Buffers log lines and appends them to [`LOGS_TOPIC`] in batches.
struct LogWriter {
    topics: Arc<dyn FnTopics>,
    pending: Mutex<Vec<Record>>,
    stop: AtomicBool,
}

impl LogWriter {
    fn push(&self, function: &str, stream: &str, line: &str) {
        let mut line = line.trim_end().to_string();
        if line.len() > FN_LOG_LINE_MAX_BYTES {
            let mut cut = FN_LOG_LINE_MAX_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let l = LogLine { timestamp: now_ms(), function: function.to_string(), stream: stream.to_string(), line };
        let Ok(value) = serde_json::to_vec(&l) else { return };
        let record = Record {
            key: Some(Bytes::copy_from_slice(function.as_bytes())),
            value: Some(value.into()),
            timestamp: l.timestamp,
            headers: vec![],
        };
        lock(&self.pending).push(record);
    }

    fn sink(self: &Arc<Self>, function: &str) -> LogSink {
        let me = self.clone();
        let name = function.to_string();
        Arc::new(move |stream: &str, line: &str| me.push(&name, stream, line))
    }

    fn flush(&self) {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.topics.append(LOGS_TOPIC, 0, batch) {
            tracing::warn!(error = %e, "function log lines lost");
        }
    }

    fn run(&self) {
        // Parked between flushes; `Host::shutdown` unparks it so that a stop is not kept waiting.
        while !self.stop.load(Relaxed) {
            std::thread::park_timeout(Duration::from_millis(200));
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_sized_by_backlog_and_processing_time() {
        // Unknown processing time: one worker per partition with a backlog, up to the maximum.
        assert_eq!(wanted_workers(1000, None, 3, 8), 3);
        assert_eq!(wanted_workers(1000, None, 12, 8), 8);
        // 1000 events at 10 ms each are 10 s of work: as many workers as partitions allow.
        assert_eq!(wanted_workers(1000, Some(10_000.0), 4, 8), 4);
        // 1000 events at 1.5 ms: 1.5 s of work, two workers clear it within the target.
        assert_eq!(wanted_workers(1000, Some(1_500.0), 4, 8), 2);
        // A fast function: one worker is enough for a backlog over every partition.
        assert_eq!(wanted_workers(100_000, Some(1.0), 8, 8), 1);
        // Nothing to do: no workers.
        assert_eq!(wanted_workers(0, Some(1.0), 0, 8), 0);
        assert_eq!(wanted_workers(0, None, 2, 8), 0);
    }
}
