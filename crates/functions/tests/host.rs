//! The host's delivery rules over in-memory topics with an in-test runtime: order per partition,
//! outputs before commits, retries, bisection, dead letters, redeploys, restarts, filters,
//! scaling up with the backlog and down to zero, unordered lanes, timers, HTTP invocations.
//! (The real runtimes and the real broker are tested in their own crates and in the binary's
//! end-to-end tests.)

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_common::topics::{GroupOffsets, MemTopics, Record, Topics};
use freshet_functions::host::{FnTopics, Host, Loader, FUNCTIONS_TOPIC};
use freshet_functions::spec::{Deployment, RuntimeSpec};
use freshet_functions::{
    Event, Failure, FunctionSpec, InvokeError, LogSink, Output, Reply, Runtime, RuntimeFactory, Trigger,
};

type Body = Arc<dyn Fn(&[Event]) -> Result<Reply, InvokeError> + Send + Sync>;

/// A runtime whose behaviour the test writes as a closure, picked by the deployment's command.
struct TestLoader {
    bodies: Mutex<Vec<(String, Body)>>,
    instances: Arc<AtomicUsize>,
}

struct TestFactory(Body, Arc<AtomicUsize>);
struct TestRuntime(Body, Arc<AtomicUsize>);

impl Runtime for TestRuntime {
    fn invoke(&mut self, batch: &[Event]) -> Result<Reply, InvokeError> {
        (self.0)(batch)
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RuntimeFactory for TestFactory {
    fn instantiate(&self) -> Result<Box<dyn Runtime>, InvokeError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(TestRuntime(self.0.clone(), self.1.clone())))
    }
}

impl Loader for TestLoader {
    fn load(&self, d: &Deployment, _log: LogSink) -> Result<Arc<dyn RuntimeFactory>, InvokeError> {
        let RuntimeSpec::Process { command, .. } = &d.spec.runtime else {
            return Err(InvokeError::Start("test loader: process specs only".into()));
        };
        let bodies = self.bodies.lock().unwrap();
        let body = bodies.iter().find(|(n, _)| n == command).map(|(_, b)| b.clone());
        let body = body.ok_or_else(|| InvokeError::Start(format!("no body {command}")))?;
        Ok(Arc::new(TestFactory(body, self.instances.clone())))
    }
}

fn loader(bodies: Vec<(&str, Body)>) -> Arc<TestLoader> {
    Arc::new(TestLoader {
        bodies: Mutex::new(bodies.into_iter().map(|(n, b)| (n.to_string(), b)).collect()),
        instances: Arc::new(AtomicUsize::new(0)),
    })
}

/// Each event back with its value mapped by `f`, keeping the key (to the default output topic).
fn map_values(f: fn(&[u8]) -> Vec<u8>) -> Body {
    Arc::new(move |batch: &[Event]| {
        Ok(Reply {
            outputs: batch
                .iter()
                .map(|e| Output {
                    key: e.key.clone(),
                    value: e.value.as_deref().map(|v| f(v).into()),
                    ..Default::default()
                })
                .collect(),
            failed: vec![],
        })
    })
}

/// Maps each value to upper case, keeping the key.
fn upper() -> Body {
    map_values(<[u8]>::to_ascii_uppercase)
}

/// Every event back unchanged (to the default output topic).
fn echo() -> Body {
    map_values(<[u8]>::to_vec)
}

fn spec(name: &str, body: &str, topic: &str) -> FunctionSpec {
    let mut s = FunctionSpec::new(
        name,
        RuntimeSpec::Process { command: body.into(), env: Default::default() },
        Trigger::Topic { topic: topic.into(), group: None, start: Default::default(), filter: None },
    );
    s.output = Some(format!("{name}-out"));
    s.idle_ms = 300;
    s.retry.backoff_initial_ms = 5;
    s.retry.backoff_max_ms = 20;
    s
}

fn deploy(host: &Host, spec: FunctionSpec) -> FunctionSpec {
    host.deploy(Deployment { spec, code: vec![] }).expect("deploy")
}

fn produce(topics: &MemTopics, topic: &str, partition: i32, values: &[String]) {
    let records = values
        .iter()
        .map(|v| Record {
            key: Some(format!("k{partition}").into_bytes().into()),
            value: Some(v.clone().into_bytes().into()),
            timestamp: 1,
            headers: vec![],
        })
        .collect();
    topics.append(topic, partition, records).unwrap();
}

fn all(topics: &MemTopics, topic: &str) -> Vec<Vec<String>> {
    let n = topics.partitions(topic).unwrap_or(0);
    (0..n)
        .map(|p| {
            topics
                .read(topic, p, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|c| String::from_utf8(c.record.value.unwrap_or_default().to_vec()).unwrap())
                .collect()
        })
        .collect()
}

fn count(topics: &MemTopics, topic: &str) -> usize {
    all(topics, topic).iter().map(Vec::len).sum()
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn setup(bodies: Vec<(&str, Body)>) -> (Arc<MemTopics>, Arc<TestLoader>, Arc<Host>) {
    let topics = Arc::new(MemTopics::new());
    let l = loader(bodies);
    let host = Host::open(topics.clone() as Arc<dyn FnTopics>, l.clone()).unwrap();
    (topics, l, host)
}

#[test]
fn maps_every_partition_in_order_and_commits() {
    let (topics, _, host) = setup(vec![("upper", upper())]);
    topics.create_topic("in", 3).unwrap();
    for p in 0..3 {
        produce(&topics, "in", p, &(0..500).map(|i| format!("v{p}-{i}")).collect::<Vec<_>>());
    }
    deploy(&host, spec("f", "upper", "in"));
    wait_until("1500 outputs", Duration::from_secs(10), || count(&topics, "f-out") == 1500);
    // Same key per input partition → one output partition per key, in input order.
    let out = all(&topics, "f-out");
    for p in 0..3 {
        let expected: Vec<String> = (0..500).map(|i| format!("V{p}-{i}")).collect();
        let prefix = format!("V{p}-");
        let got = out.iter().find_map(|part| {
            let mine: Vec<String> = part.iter().filter(|v| v.starts_with(&prefix)).cloned().collect();
            (!mine.is_empty()).then_some(mine)
        });
        assert_eq!(got, Some(expected), "partition {p}'s outputs out of order or incomplete");
    }
    wait_until("offsets committed", Duration::from_secs(5), || {
        let c = topics.committed("freshet-fn-f", "in").unwrap();
        (0..3).all(|p| c.get(&p) == Some(&500))
    });
    let status = host.status("f").unwrap();
    assert_eq!(status.events_in, 1500);
    assert_eq!(status.events_out, 1500);
    assert_eq!(status.errors, 0);
    wait_until("lag 0", Duration::from_secs(2), || host.status("f").unwrap().lag == 0);
    host.shutdown();
}

#[test]
fn failures_retry_then_dead_letter_and_the_rest_flows_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // "bad" events fail on their own (partial failure), "crash" fails the whole batch.
    let body: Body = Arc::new(move |batch: &[Event]| {
        c.fetch_add(1, Ordering::SeqCst);
        let values: Vec<String> =
            batch.iter().map(|e| String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap()).collect();
        if values.iter().any(|v| v.contains("crash")) {
            return Err(InvokeError::Failed("crashed".into()));
        }
        let mut reply = Reply::default();
        for (i, v) in values.iter().enumerate() {
            if v.contains("bad") {
                reply.failed.push(Failure { index: i, error: format!("cannot handle {v}") });
            } else {
                reply.outputs.push(Output { value: Some(v.clone().into_bytes().into()), ..Default::default() });
            }
        }
        Ok(reply)
    });
    let (topics, _, host) = setup(vec![("picky", body)]);
    topics.create_topic("in", 1).unwrap();
    let values: Vec<String> = (0..40)
        .map(|i| match i {
            7 | 21 => format!("bad-{i}"),
            13 => format!("crash-{i}"),
            _ => format!("ok-{i}"),
        })
        .collect();
    produce(&topics, "in", 0, &values);
    let mut s = spec("g", "picky", "in");
    s.batch_size = 10;
    deploy(&host, s);
    wait_until("3 dead letters", Duration::from_secs(10), || count(&topics, "g-dlq") == 3);
    wait_until("37 outputs", Duration::from_secs(10), || count(&topics, "g-out") == 37);
    let out = &all(&topics, "g-out")[0];
    let expected: Vec<String> = values.iter().filter(|v| v.starts_with("ok")).cloned().collect();
    assert_eq!(out, &expected, "successful events in order, each once");
    let dlq = topics.read("g-dlq", 0, 0, 10).unwrap();
    let dead: Vec<String> =
        dlq.iter().map(|c| String::from_utf8(c.record.value.clone().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(dead, vec!["bad-7", "crash-13", "bad-21"]);
    let header = |c: &freshet_common::topics::Consumed, k: &str| {
        c.record
            .headers
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v).unwrap())
    };
    assert_eq!(header(&dlq[0], "freshet.attempts").as_deref(), Some("3"));
    assert_eq!(header(&dlq[0], "freshet.source.offset").as_deref(), Some("7"));
    assert_eq!(header(&dlq[0], "freshet.source.topic").as_deref(), Some("in"));
    assert_eq!(header(&dlq[0], "freshet.error").as_deref(), Some("cannot handle bad-7"));
    assert_eq!(header(&dlq[1], "freshet.error").as_deref(), Some("crashed"));
    let status = host.status("g").unwrap();
    assert_eq!(status.dead_letters, 3);
    assert!(status.retries >= 6, "each failing event retried twice: {status:?}");
    let logs = host.logs("g", 100).unwrap();
    assert!(logs.iter().any(|l| l.stream == "error" && l.line.contains("cannot handle bad-7")), "{logs:?}");
    host.shutdown();
}

#[test]
fn redeploy_and_restart_resume_from_committed_offsets() {
    let (topics, l, host) = setup(vec![("upper", upper())]);
    topics.create_topic("in", 2).unwrap();
    produce(&topics, "in", 0, &(0..100).map(|i| format!("a{i}")).collect::<Vec<_>>());
    deploy(&host, spec("h", "upper", "in"));
    wait_until("100 outputs", Duration::from_secs(10), || count(&topics, "h-out") == 100);
    // Version 2 writes lower case: every record is processed by exactly one version.
    let lower = echo();
    l.bodies.lock().unwrap().push(("lower".into(), lower));
    let v2 = deploy(&host, spec("h", "lower", "in"));
    assert_eq!(v2.version, 2);
    produce(&topics, "in", 0, &(100..200).map(|i| format!("a{i}")).collect::<Vec<_>>());
    wait_until("200 outputs", Duration::from_secs(10), || count(&topics, "h-out") == 200);
    host.shutdown();
    // A new host over the same topics finds the function (version 2) and goes on.
    produce(&topics, "in", 1, &(0..50).map(|i| format!("b{i}")).collect::<Vec<_>>());
    let host = Host::open(topics.clone() as Arc<dyn FnTopics>, l.clone()).unwrap();
    assert_eq!(host.status("h").unwrap().spec.version, 2);
    wait_until("250 outputs", Duration::from_secs(10), || count(&topics, "h-out") == 250);
    std::thread::sleep(Duration::from_millis(300));
    let out: Vec<String> = all(&topics, "h-out").concat();
    assert_eq!(out.len(), 250, "no duplicates");
    assert_eq!(out.iter().filter(|v| v.starts_with('A')).count(), 100);
    host.delete("h").unwrap();
    assert!(host.status("h").is_err());
    host.shutdown();
    let host = Host::open(topics.clone() as Arc<dyn FnTopics>, l).unwrap();
    assert!(host.list().is_empty(), "a deleted function stays deleted");
    assert!(topics.read(FUNCTIONS_TOPIC, 0, 0, 100).unwrap().len() >= 3);
    host.shutdown();
}

#[test]
fn filter_skips_and_commits() {
    let (topics, _, host) = setup(vec![("upper", upper())]);
    topics.create_topic("in", 1).unwrap();
    let values: Vec<String> =
        (0..20).map(|i| format!(r#"{{"n":{i},"kind":"{}"}}"#, if i % 2 == 0 { "even" } else { "odd" })).collect();
    produce(&topics, "in", 0, &values);
    let mut s = spec("flt", "upper", "in");
    s.trigger = Trigger::Topic {
        topic: "in".into(),
        group: Some("my-group".into()),
        start: Default::default(),
        filter: Some(serde_json::json!({"kind": ["even"]})),
    };
    deploy(&host, s);
    wait_until("offsets committed", Duration::from_secs(5), || {
        topics.committed("my-group", "in").unwrap().get(&0) == Some(&20)
    });
    assert_eq!(count(&topics, "flt-out"), 10);
    assert_eq!(host.status("flt").unwrap().filtered, 10);
    // A bad filter is refused with where it is wrong.
    let mut bad = spec("flt2", "upper", "in");
    bad.trigger = Trigger::Topic {
        topic: "in".into(),
        group: None,
        start: Default::default(),
        filter: Some(serde_json::json!({"kind": "even"})),
    };
    let e = host.deploy(Deployment { spec: bad, code: vec![] }).unwrap_err().to_string();
    assert!(e.contains("'kind'"), "{e}");
    host.shutdown();
}

#[test]
fn pool_scales_up_with_backlog_and_down_to_zero() {
    let slow: Body = Arc::new(|batch: &[Event]| {
        std::thread::sleep(Duration::from_millis(20));
        upper()(batch)
    });
    let (topics, l, host) = setup(vec![("slow", slow)]);
    topics.create_topic("in", 8).unwrap();
    let mut s = spec("s", "slow", "in");
    s.batch_size = 10;
    s.max_concurrency = 4;
    deploy(&host, s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.status("s").unwrap().workers, 0, "no backlog, no workers");
    assert_eq!(l.instances.load(Ordering::SeqCst), 0);
    for p in 0..8 {
        produce(&topics, "in", p, &(0..200).map(|i| format!("x{i}")).collect::<Vec<_>>());
    }
    let burst = Instant::now();
    wait_until("more than one worker", Duration::from_secs(2), || host.status("s").unwrap().workers > 1);
    let scaled = burst.elapsed();
    let mut peak = 0;
    wait_until("backlog done", Duration::from_secs(30), || {
        peak = peak.max(host.status("s").unwrap().workers);
        count(&topics, "s-out") == 1600
    });
    assert!(peak <= 4, "never above max_concurrency: {peak}");
    wait_until("idle pool back to zero", Duration::from_secs(3), || {
        host.status("s").unwrap().workers == 0 && l.instances.load(Ordering::SeqCst) == 0
    });
    eprintln!("scaled up in {scaled:?}, peak {peak} workers");
    host.shutdown();
}

#[test]
fn unordered_runs_keys_concurrently_in_order_per_key() {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let s2 = seen.clone();
    let body: Body = Arc::new(move |batch: &[Event]| {
        std::thread::sleep(Duration::from_millis(2));
        let mut s = s2.lock().unwrap();
        for e in batch {
            s.push((
                String::from_utf8(e.key.clone().unwrap().to_vec()).unwrap(),
                String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap(),
            ));
        }
        Ok(Reply::default())
    });
    let (topics, l, host) = setup(vec![("rec", body)]);
    topics.create_topic("in", 1).unwrap();
    let records: Vec<Record> = (0..400)
        .map(|i| Record {
            key: Some(format!("key{}", i % 8).into_bytes().into()),
            value: Some(format!("{i}").into_bytes().into()),
            timestamp: 1,
            headers: vec![],
        })
        .collect();
    topics.append("in", 0, records).unwrap();
    let mut s = spec("u", "rec", "in");
    s.ordered = false;
    s.batch_size = 100;
    s.max_concurrency = 4;
    deploy(&host, s);
    wait_until("all seen", Duration::from_secs(10), || seen.lock().unwrap().len() == 400);
    let seen = seen.lock().unwrap().clone();
    for k in 0..8 {
        let key = format!("key{k}");
        let values: Vec<i64> = seen.iter().filter(|(kk, _)| *kk == key).map(|(_, v)| v.parse().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {values:?}");
    }
    assert!(l.instances.load(Ordering::SeqCst) > 1, "lanes ran on several instances");
    host.shutdown();
}

#[test]
fn cron_and_http_invocations() {
    let echo = echo();
    let (topics, _, host) = setup(vec![("echo", echo)]);
    let mut tick = spec("tick", "echo", "unused");
    tick.trigger = Trigger::Cron { expr: "* * * * * *".into() };
    deploy(&host, tick);
    wait_until("two timer runs", Duration::from_secs(5), || count(&topics, "tick-out") >= 2);
    let first = topics.read("tick-out", 0, 0, 1).unwrap();
    let v: serde_json::Value = serde_json::from_slice(first[0].record.value.as_deref().unwrap()).unwrap();
    assert!(v["scheduled_time"].as_str().unwrap().contains('T'), "{v}");

    let mut call = spec("call", "echo", "unused");
    call.trigger = Trigger::Http;
    deploy(&host, call);
    let reply = host.invoke("call", Event { value: Some(Bytes::from_static(b"hello")), ..Default::default() }).unwrap();
    assert_eq!(reply.outputs[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(count(&topics, "call-out"), 1, "outputs also go to the output topic");
    assert!(matches!(host.invoke("nope", Event::default()), Err(freshet_functions::host::HostError::NotFound(_))));
    host.shutdown();
}
