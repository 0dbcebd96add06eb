//! Event-triggered functions inside a real `freshet serve`: deployed with `freshet fn`, fed by
//! records produced with librdkafka (and by a SQL join), outputs consumed with librdkafka;
//! failures go to the dead-letter topic; a SIGKILL of the server loses no event.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::rest::{get, ksql};
use common::{repo, wait_until, Server};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(30);

fn base(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr).set("broker.address.family", "v4");
    c
}

fn produce(addr: &str, topic: &str, records: &[(String, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = base(addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for (key, value) in records {
        producer.send(BaseRecord::to(topic).key(key).payload(value)).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(WAIT).expect("flushed");
}

/// A consumed record: partition, key, value, headers.
type Consumed = (i32, String, String, BTreeMap<String, String>);

/// Reads every partition of `topic` from the start until `done` says enough (bounded).
fn consume_until(addr: &str, topic: &str, what: &str, done: impl Fn(&[Consumed]) -> bool) -> Vec<Consumed> {
    let consumer: BaseConsumer = base(addr)
        .set("group.id", "functions-test")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let partitions = wait_until(WAIT, &format!("topic {topic}"), || {
        let m = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let t = m.topics().first()?;
        (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out: Vec<Consumed> = vec![];
    let deadline = Instant::now() + WAIT;
    while !done(&out) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; got {} records: {out:?}", out.len());
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("consume");
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let headers =
            m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), text(h.value))).collect()).unwrap_or_default();
        out.push((m.partition(), text(m.key()), text(m.payload()), headers));
    }
    out
}

/// Runs `freshet fn ARGS` against the server; returns stdout, panics with stderr on failure.
fn freshet_fn(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .arg("fn")
        .args(args)
        .arg("--http")
        .arg(&server.http)
        .output()
        .expect("run freshet fn");
    assert!(
        out.status.success(),
        "freshet fn {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status(server: &Server, name: &str) -> Json {
    let (code, body) = get(&server.http, &format!("/functions/{name}"));
    assert_eq!(code, 200, "{body}");
    body
}

/// A Python process function: for every event, the value (JSON) with `"TOTAL"` = amount × 1.2
/// and the customer's name upper-cased, keyed by order; a value with `"POISON": true` fails on
/// its own.
fn write_python_function(dir: &Path) -> String {
    let path = dir.join("tax.py");
    std::fs::write(
        &path,
        r#"import json, sys
print("tax function starting", file=sys.stderr, flush=True)
for line in sys.stdin:
    req = json.loads(line)
    outputs, failed = [], []
    for i, e in enumerate(req["events"]):
        v = json.loads(e["value"])
        if v.get("POISON"):
            failed.append({"index": i, "error": "poison order %s" % v.get("ID")})
            continue
        v["TOTAL"] = round(v["AMOUNT"] * 1.2, 2)
        v["NAME"] = (v.get("NAME") or "").upper()
        outputs.append({"key": "o%d" % v["ID"], "value": json.dumps(v)})
    print(json.dumps({"id": req["id"], "outputs": outputs, "failed": failed}), flush=True)
"#,
    )
    .unwrap();
    format!("python3 -u {}", path.display())
}

/// The seed scenario: orders and customers produced by librdkafka, a SQL stream-table join
/// enriching orders with their customer, a Python function triggered by the enriched stream
/// writing a result topic; a poisoned order goes to the dead-letter topic; the server is
/// SIGKILLed mid-stream and restarted, and every order still reaches the result topic.
#[test]
fn sql_enriched_stream_feeds_a_function_that_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let customers: Vec<(String, String)> = (0..10)
        .map(|c| (format!("c{c}"), json!({ "NAME": format!("customer {c}"), "CITY": "paris" }).to_string()))
        .collect();
    produce(&server.addr, "customers", &customers);
    let (code, body) = ksql(
        &server.http,
        "CREATE TABLE customers (id STRING PRIMARY KEY, name STRING, city STRING)
             WITH (KAFKA_TOPIC='customers', VALUE_FORMAT='JSON');
         CREATE STREAM orders (order_key STRING KEY, id BIGINT, customer STRING, amount DOUBLE, poison BOOLEAN)
             WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON', PARTITIONS=2);
         CREATE STREAM enriched WITH (KAFKA_TOPIC='enriched_orders') AS
             SELECT o.customer AS customer, o.id AS id, o.amount AS amount, o.poison AS poison, c.name AS name,
                    c.city AS city
             FROM orders o JOIN customers c ON o.customer = c.id;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(code, 200, "{body}");
    let command = write_python_function(dir.path());
    let deployed = freshet_fn(
        &server,
        &[
            "deploy",
            "tax",
            "--command",
            &command,
            "--trigger",
            "topic:enriched_orders",
            "--output",
            "taxed_orders",
            "--batch-size",
            "50",
            "--max-attempts",
            "2",
        ],
    );
    assert!(deployed.contains("deployed tax version 1"), "{deployed}");

    let order = |i: i64| {
        let v = json!({ "ID": i, "CUSTOMER": format!("c{}", i % 10), "AMOUNT": i as f64, "POISON": i == 13 });
        (format!("o{i}"), v.to_string())
    };
    produce(&server.addr, "orders", &(0..200).map(order).collect::<Vec<_>>());
    let taxed = consume_until(&server.addr, "taxed_orders", "199 taxed orders", |r| r.len() >= 199);
    let v: Json = serde_json::from_str(&taxed.iter().find(|r| r.1 == "o7").expect("order 7").2).unwrap();
    assert_eq!(v["TOTAL"], json!(8.4), "{v}");
    assert_eq!(v["NAME"], "CUSTOMER 7", "enriched by the join, then by the function: {v}");
    let dead = consume_until(&server.addr, "tax-dlq", "the poisoned order", |r| !r.is_empty());
    let poisoned: Json = serde_json::from_str(&dead[0].2).unwrap();
    assert_eq!((dead[0].1.as_str(), &poisoned["ID"]), ("c3", &json!(13)), "keyed by the join column");
    assert_eq!(dead[0].3["freshet.error"], "poison order 13");
    assert_eq!(dead[0].3["freshet.source.topic"], "enriched_orders");
    assert_eq!(dead[0].3["freshet.attempts"], "2");

    // Status and logs through the CLI and the HTTP API.
    let text = freshet_fn(&server, &["status", "tax"]);
    assert!(text.contains("topic:enriched_orders") && text.contains("dead letters"), "{text}");
    let s = status(&server, "tax");
    assert_eq!(s["dead_letters"], 1, "{s}");
    assert!(s["events_out"].as_u64().unwrap() >= 199, "{s}");
    let logs = freshet_fn(&server, &["logs", "tax"]);
    assert!(logs.contains("tax function starting"), "stderr in the log: {logs}");
    assert!(logs.contains("poison order 13"), "errors in the log: {logs}");
    let list = freshet_fn(&server, &["list"]);
    assert!(list.contains("tax") && list.contains("process"), "{list}");
    let (code, metrics) = get_text(&server.http, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("freshet_function_invocations_total{function=\"tax\"}"), "{metrics}");

    // More orders; SIGKILL while they flow; after the restart every order is there.
    produce(&server.addr, "orders", &(200..2000).map(order).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    server.restart();
    produce(&server.addr, "orders", &(2000..2100).map(order).collect::<Vec<_>>());
    let taxed = consume_until(&server.addr, "taxed_orders", "every order", |r| {
        r.iter().map(|r| r.1.as_str()).collect::<BTreeSet<_>>().len() >= 2099
    });
    let keys: BTreeSet<&str> = taxed.iter().map(|r| r.1.as_str()).collect();
    for i in (0..2100).filter(|i| *i != 13) {
        assert!(keys.contains(format!("o{i}").as_str()), "order {i} lost");
    }
    assert!(!keys.contains("o13"));
    // The function's definition survived too.
    assert_eq!(status(&server, "tax")["spec"]["version"], 1);
    freshet_fn(&server, &["delete", "tax"]);
    let (code, body) = get_text(&server.http, "/functions/tax");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("function 'tax' does not exist"), "{body}");
}

fn get_text(http: &str, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://{http}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// A process function that crashes, hangs or fails never takes the server down; the events it
/// cannot handle go to the dead-letter topic and the others flow on, in order.
#[test]
fn crashing_and_hanging_functions_dead_letter_and_the_broker_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = dir.path().join("moody.py");
    std::fs::write(
        &script,
        r#"import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    values = [e["value"] for e in req["events"]]
    if any(v == "exit" for v in values):
        os._exit(3)
    if any(v == "hang" for v in values):
        time.sleep(60)
    print(json.dumps({"id": req["id"], "outputs": [{"key": e["key"], "value": e["value"]} for e in req["events"]]}), flush=True)
"#,
    )
    .unwrap();
    let command = format!("python3 -u {}", script.display());
    freshet_fn(
        &server,
        &[
            "deploy",
            "moody",
            "--command",
            &command,
            "--trigger",
            "topic:moods",
            "--output",
            "moods-out",
            "--dlq",
            "moods-dead",
            "--timeout-ms",
            "1000",
            "--max-attempts",
            "2",
            "--batch-size",
            "8",
        ],
    );
    let values: Vec<(String, String)> = (0..40)
        .map(|i| {
            let v = match i {
                9 => "exit".to_string(),
                22 => "hang".to_string(),
                _ => format!("m{i}"),
            };
            ("k".to_string(), v)
        })
        .collect();
    produce(&server.addr, "moods", &values);
    let out = consume_until(&server.addr, "moods-out", "38 outputs", |r| r.len() >= 38);
    let got: Vec<&str> = out.iter().map(|r| r.2.as_str()).collect();
    let expected: Vec<String> = (0..40).filter(|i| *i != 9 && *i != 22).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "the others flow on, in order");
    let dead = consume_until(&server.addr, "moods-dead", "2 dead letters", |r| r.len() >= 2);
    let mut dead: Vec<(&str, &str)> = dead.iter().map(|r| (r.2.as_str(), r.3["freshet.error"].as_str())).collect();
    dead.sort();
    assert_eq!(dead[0].0, "exit");
    assert!(dead[0].1.contains("exit"), "{dead:?}");
    assert_eq!(dead[1].0, "hang");
    assert!(dead[1].1.contains("timed out"), "{dead:?}");
    // The broker still answers.
    let (code, _) = get(&server.http, "/healthcheck");
    assert_eq!(code, 200);
    produce(&server.addr, "moods", &[("k".into(), "after".into())]);
    consume_until(&server.addr, "moods-out", "the next event", |r| r.iter().any(|r| r.2 == "after"));
}

/// Starts `examples/functions/http/server.py` on a free port, over HTTPS with `tls` (certificate
/// chain and key files); returns it and its URL.
fn start_http_example(tls: Option<(&Path, &Path)>) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut command = Command::new("python3");
    command.arg("-u").arg(repo().join("examples/functions/http/server.py")).arg("0");
    if let Some((cert, key)) = tls {
        command.arg(cert).arg(key);
    }
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().expect("python3 server.py");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).expect("server.py says where it listens");
    let port = line.trim().rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
    let port = port.unwrap_or_else(|| panic!("no port in {line:?}"));
    let url = if tls.is_some() { format!("https://localhost:{port}/") } else { format!("http://127.0.0.1:{port}/") };
    (child, url)
}

/// Writes a private CA (`ca.pem`) and a certificate chain for `localhost` it signed
/// (`cert.pem`, `key.pem`) into `dir`.
fn write_private_ca(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem() + &ca.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// The example functions (Python and Node processes, the CloudEvents endpoint) on the same
/// input topic, through a real server; the HTTP trigger and a timer trigger.
#[test]
fn example_process_and_http_functions_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let examples = repo().join("examples/functions");
    let python = format!("python3 -u {}", examples.join("python/enrich.py").display());
    let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let (mut http_child, url) = start_http_example(None);
    write_private_ca(dir.path());
    let (cert, key, ca) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    let (mut https_child, https_url) = start_http_example(Some((&cert, &key)));
    let ca = ca.to_str().unwrap();
    let mut deploys = vec![
        vec!["deploy", "py", "--command", &python, "--trigger", "topic:ex-in", "--output", "ex-py"],
        vec!["deploy", "web", "--url", &url, "--trigger", "topic:ex-in", "--output", "ex-web", "--max-attempts", "1"],
        vec![
            "deploy",
            "web-tls",
            "--url",
            &https_url,
            "--tls-ca",
            ca,
            "--trigger",
            "topic:ex-in",
            "--output",
            "ex-tls",
        ],
    ];
    let node = format!("node {}", examples.join("node/enrich.js").display());
    if node_ok {
        deploys.push(vec!["deploy", "js", "--command", &node, "--trigger", "topic:ex-in", "--output", "ex-js"]);
    } else {
        common::missing("node");
    }
    for d in &deploys {
        freshet_fn(&server, d);
    }
    let mut input: Vec<(String, String)> = (0..20).map(|i| (format!("k{i}"), json!({ "n": i }).to_string())).collect();
    input.push(("k-skip".into(), "skip".into()));
    input.push(("k-fail".into(), "please fail".into()));
    produce(&server.addr, "ex-in", &input);

    for (topic, by) in [("ex-py", "python"), ("ex-js", "node")] {
        if by == "node" && !node_ok {
            continue;
        }
        // 20 JSON values; "skip" and "please fail" are not JSON: dead letters.
        let out = consume_until(&server.addr, topic, &format!("{by} outputs"), |r| r.len() >= 20);
        let v: Json = serde_json::from_str(&out.iter().find(|r| r.1 == "k3").unwrap().2).unwrap();
        assert_eq!(v, json!({ "n": 3, "processed_by": by }), "{topic}");
    }
    let dead = consume_until(&server.addr, "py-dlq", "python dead letters", |r| r.len() >= 2);
    assert!(dead.iter().all(|r| r.3["freshet.error"].contains("not JSON")), "{dead:?}");

    // CloudEvents: JSON gets a field, "skip" has no output, "please fail" is a dead letter.
    let out = consume_until(&server.addr, "ex-web", "HTTP outputs", |r| r.len() >= 20);
    let v: Json = serde_json::from_str(&out.iter().find(|r| r.1 == "k5").expect("key kept").2).unwrap();
    assert_eq!(v["processed_by"], "http", "{v}");
    let dead = consume_until(&server.addr, "web-dlq", "HTTP dead letter", |r| !r.is_empty());
    assert_eq!(dead[0].2, "please fail");
    assert!(dead[0].3["freshet.error"].contains("500"), "{:?}", dead[0].3);
    std::thread::sleep(Duration::from_millis(500));
    let out = consume_until(&server.addr, "ex-web", "HTTP outputs", |r| r.len() >= 20);
    assert_eq!(out.len(), 20, "204 means no output");
    // The same endpoint over HTTPS, its certificate signed by the CA given at deploy.
    let out = consume_until(&server.addr, "ex-tls", "HTTPS outputs", |r| r.len() >= 20);
    let v: Json = serde_json::from_str(&out.iter().find(|r| r.1 == "k7").expect("key kept").2).unwrap();
    assert_eq!(v, json!({ "n": 7, "processed_by": "http" }));
    let listed = freshet_fn(&server, &["list"]);
    assert!(listed.contains(&format!("http: {https_url}")), "{listed}");

    // The HTTP trigger, through `freshet fn invoke`.
    freshet_fn(&server, &["deploy", "py-call", "--command", &python, "--trigger", "http"]);
    let answer = freshet_fn(&server, &["invoke", "py-call", "--data", r#"{"x": 1}"#, "--key", "a"]);
    let v: Json = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(v, json!({ "x": 1, "processed_by": "python" }));
    let (code, body) = post_text(&server.http, "/functions/py-call/invoke", "not json");
    assert_eq!(code, 502, "a failed event is a failed invocation: {body}");
    assert!(body.contains("not JSON"), "{body}");

    // A timer trigger: every second, the scheduled time goes through the function.
    freshet_fn(
        &server,
        &["deploy", "py-tick", "--command", &python, "--trigger", "cron:* * * * * *", "--output", "ticks"],
    );
    let ticks = consume_until(&server.addr, "ticks", "two timer runs", |r| r.len() >= 2);
    let v: Json = serde_json::from_str(&ticks[0].2).unwrap();
    assert!(v["scheduled_time"].is_string() && v["processed_by"] == "python", "{v}");

    for child in [&mut http_child, &mut https_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn post_text(http: &str, path: &str, body: &str) -> (u16, String) {
    match ureq::post(&format!("http://{http}{path}")).send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

/// The function host against an existing Kafka-protocol cluster (`serve --external-kafka`): the
/// definitions, the trigger, the outputs and the group's offsets all live in the cluster; a
/// restart of the functions process resumes from the committed offsets.
#[test]
fn functions_run_against_an_external_kafka_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut host = Server::start_external(&cluster.addr, &[]);
    let python = format!("python3 -u {}", repo().join("examples/functions/python/enrich.py").display());
    freshet_fn(&host, &["deploy", "ext", "--command", &python, "--trigger", "topic:ext-in", "--output", "ext-out"]);
    let input: Vec<(String, String)> = (0..30).map(|i| (format!("k{i}"), json!({ "n": i }).to_string())).collect();
    produce(&cluster.addr, "ext-in", &input);
    let out = consume_until(&cluster.addr, "ext-out", "30 outputs in the cluster", |r| r.len() >= 30);
    assert!(out
        .iter()
        .all(|r| r.2.contains("\"processed_by\": \"python\"") || r.2.contains("\"processed_by\":\"python\"")));
    // The group's offsets are the cluster's.
    let committed = wait_until(WAIT, "committed offsets", || {
        let consumer: BaseConsumer = base(&cluster.addr).set("group.id", "freshet-fn-ext").create().ok()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("ext-in", 0);
        let c = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        match c.find_partition("ext-in", 0)?.offset() {
            Offset::Offset(o) if o >= 30 => Some(o),
            _ => None,
        }
    });
    assert_eq!(committed, 30);
    assert!(host.stop().success());
    host.restart();
    assert_eq!(status(&host, "ext")["spec"]["version"], 1, "the definition is in the cluster");
    produce(&cluster.addr, "ext-in", &[("k30".into(), json!({ "n": 30 }).to_string())]);
    let out =
        consume_until(&cluster.addr, "ext-out", "the event after the restart", |r| r.iter().any(|r| r.1 == "k30"));
    assert_eq!(out.len(), 31, "nothing processed twice after a clean restart");
}

/// A burst of backlog raises the pool above one worker within a second or two (measured from
/// the burst); an idle period brings it back to zero. Real processes, real broker.
#[test]
fn pool_scales_with_the_backlog_and_back_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = dir.path().join("slow.py");
    std::fs::write(
        &script,
        r#"import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    time.sleep(0.05)
    print(json.dumps({"id": req["id"], "outputs": [{"key": e["key"], "value": e["value"]} for e in req["events"]]}), flush=True)
"#,
    )
    .unwrap();
    let (code, body) = ksql(
        &server.http,
        "CREATE STREAM burst (k STRING KEY, v STRING) WITH (KAFKA_TOPIC='burst', PARTITIONS=4, VALUE_FORMAT='JSON');",
        json!({}),
    );
    assert_eq!(code, 200, "{body}");
    let command = format!("python3 -u {}", script.display());
    freshet_fn(
        &server,
        &[
            "deploy",
            "slow",
            "--command",
            &command,
            "--trigger",
            "topic:burst",
            "--output",
            "burst-out",
            "--batch-size",
            "5",
            "--max-concurrency",
            "4",
            "--idle-ms",
            "1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&server, "slow")["workers"], 0, "idle: no workers");
    let records: Vec<(String, String)> = (0..400).map(|i| (format!("k{i}"), format!("\"v{i}\""))).collect();
    produce(&server.addr, "burst", &records);
    let burst = Instant::now();
    let mut peak = 0;
    wait_until(Duration::from_secs(3), "more than one worker", || {
        let w = status(&server, "slow")["workers"].as_i64().unwrap();
        peak = peak.max(w);
        (w > 1).then_some(())
    });
    let scaled = burst.elapsed();
    assert!(scaled < Duration::from_secs(2), "scaled up in {scaled:?}");
    consume_until(&server.addr, "burst-out", "every output", |r| r.len() >= 400);
    wait_until(Duration::from_secs(10), "the pool back to zero", || {
        (status(&server, "slow")["workers"] == 0).then_some(())
    });
    let (_, metrics) = get_text(&server.http, "/metrics");
    assert!(metrics.contains("freshet_function_workers{function=\"slow\"} 0"), "{metrics}");
    // The autoscaler's processing time per event: 50 ms per batch of 5 events, ~10 ms each.
    let cost: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("freshet_function_event_processing_seconds{function=\"slow\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no processing time metric in {metrics}"));
    assert!((0.005..0.5).contains(&cost), "processing time per event {cost} s");
    eprintln!("scaled above one worker {scaled:?} after the burst (peak {peak})");
}

/// Function hosts on one cluster share a function: a deploy through one reaches the others
/// through the definitions topic, and the function's consumer group (KIP-848 protocol) splits
/// the partitions between them. When one stops, the others take its partitions; every event is
/// processed. (Two `serve --external-kafka` hosts, and the cluster, itself a `freshet serve`.)
#[test]
fn two_hosts_split_a_function_over_its_consumer_group() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut a = Server::start_external(&cluster.addr, &[]);
    let b = Server::start_external(&cluster.addr, &[]);
    let (code, body) = ksql(
        &a.http,
        "CREATE STREAM split_in (k STRING KEY, v STRING) WITH (KAFKA_TOPIC='split-in', PARTITIONS=4, VALUE_FORMAT='JSON');",
        json!({}),
    );
    assert_eq!(code, 200, "{body}");
    let python = format!("python3 -u {}", repo().join("examples/functions/python/enrich.py").display());
    freshet_fn(&a, &["deploy", "split", "--command", &python, "--trigger", "topic:split-in", "--output", "split-out"]);
    wait_until(WAIT, "host b to follow the deploy", || {
        let (code, _) = get_text(&b.http, "/functions/split");
        (code == 200).then_some(())
    });
    // The cluster is itself a `freshet serve`, so it hosts the function too: three members.
    let owned = |s: &Server| status(s, "split")["partitions"].as_array().map(Vec::len).unwrap_or(0);
    wait_until(WAIT, "the partitions split between the hosts", || {
        let (oa, ob, oc) = (owned(&a), owned(&b), owned(&cluster));
        (oa >= 1 && ob >= 1 && oc >= 1 && oa + ob + oc == 4).then_some(())
    });
    let input: Vec<(String, String)> = (0..400).map(|i| (format!("k{i}"), json!({ "n": i }).to_string())).collect();
    produce(&cluster.addr, "split-in", &input);
    consume_until(&cluster.addr, "split-out", "400 outputs", |r| {
        r.iter().map(|r| r.1.as_str()).collect::<BTreeSet<_>>().len() >= 400
    });
    let events = |s: &Server| status(s, "split")["events_in"].as_u64().unwrap();
    let (ea, eb, ec) = (events(&a), events(&b), events(&cluster));
    assert!(ea > 0 && eb > 0 && ec > 0, "every host processed events: {ea}, {eb}, {ec}");
    assert!(ea + eb + ec >= 400);
    // Host a stops (and leaves the group): b takes every partition.
    assert!(a.stop().success());
    wait_until(WAIT, "b and the cluster own every partition", || (owned(&b) + owned(&cluster) == 4).then_some(()));
    produce(
        &cluster.addr,
        "split-in",
        &(400..600).map(|i| (format!("k{i}"), json!({ "n": i }).to_string())).collect::<Vec<_>>(),
    );
    let out = consume_until(&cluster.addr, "split-out", "600 outputs", |r| {
        r.iter().map(|r| r.1.as_str()).collect::<BTreeSet<_>>().len() >= 600
    });
    assert!(out.len() >= 600);
    assert!(events(&b) + events(&cluster) >= eb + ec + 200, "b and the cluster processed the rest");
}

/// The example WASM functions through a real server: WAT (text, compiled by `freshet fn
/// deploy`), a trapping one whose failing event goes to the dead-letter topic, the C (wasi-libc)
/// and AssemblyScript examples when built (required in CI: FRESHET_REQUIRE_WASM_EXAMPLES=1).
#[test]
fn wasm_functions_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let examples = repo().join("examples/functions");
    let path = |p: &str| examples.join(p).display().to_string();
    let required = std::env::var("FRESHET_REQUIRE_WASM_EXAMPLES").is_ok_and(|v| v == "1");
    let mut deployed = vec![];
    for (name, file, extra) in [
        ("wat-id", path("wat/identity.wat"), vec!["--output", "wat-id-out"]),
        ("wat-upper", path("wat/uppercase.wat"), vec![]),
        ("wat-boom", path("wat/boom.wat"), vec!["--output", "wat-boom-out", "--max-attempts", "2"]),
        ("c-wrap", path("c/wrap_json.wasm"), vec!["--output", "c-wrap-out"]),
        ("as-reverse", path("assemblyscript/build/reverse.wasm"), vec!["--output", "as-reverse-out"]),
    ] {
        if !Path::new(&file).exists() {
            assert!(!required, "{file} is not built (FRESHET_REQUIRE_WASM_EXAMPLES=1)");
            eprintln!("SKIPPED: {file} is not built; .ci/run builds it");
            continue;
        }
        let mut args = vec!["deploy", name, "--wasm", file.as_str(), "--trigger", "topic:wasm-in"];
        args.extend(extra);
        freshet_fn(&server, &args);
        deployed.push(name);
    }
    let input: Vec<(String, String)> =
        ["hello", "kaboom", "world"].iter().map(|v| (format!("k-{v}"), v.to_string())).collect();
    produce(&server.addr, "wasm-in", &input);

    let out = consume_until(&server.addr, "wat-id-out", "identity outputs", |r| r.len() >= 3);
    let values: Vec<&str> = out.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(values, ["hello", "kaboom", "world"]);
    assert_eq!(out[0].1, "k-hello", "keys kept");
    let out = consume_until(&server.addr, "uppercased", "uppercase outputs", |r| r.len() >= 3);
    assert_eq!(out.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["HELLO", "KABOOM", "WORLD"]);
    // The trap fails the batch; bisection finds the one event; the others flow on.
    let out = consume_until(&server.addr, "wat-boom-out", "boom outputs", |r| r.len() >= 2);
    assert_eq!(out.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["hello", "world"]);
    let dead = consume_until(&server.addr, "wat-boom-dlq", "the trapping event", |r| !r.is_empty());
    assert_eq!(dead[0].2, "kaboom");
    assert!(dead[0].3["freshet.error"].contains("trap"), "{:?}", dead[0].3);
    if deployed.contains(&"c-wrap") {
        let out = consume_until(&server.addr, "c-wrap-out", "C outputs", |r| r.len() >= 3);
        let v: Json = serde_json::from_str(&out[0].2).unwrap();
        assert_eq!(v["value"], "hello", "{v}");
        let logs = freshet_fn(&server, &["logs", "c-wrap"]);
        assert!(logs.contains("[stderr]"), "the guest's stderr in its log: {logs}");
    }
    if deployed.contains(&"as-reverse") {
        let out = consume_until(&server.addr, "as-reverse-out", "AssemblyScript outputs", |r| r.len() >= 3);
        assert_eq!(out.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["olleh", "moobak", "dlrow"]);
    }
    // The HTTP trigger on a WASM function.
    freshet_fn(&server, &["deploy", "wat-call", "--wasm", &path("wat/identity.wat"), "--trigger", "http"]);
    let answer = freshet_fn(&server, &["invoke", "wat-call", "--data", "ping"]);
    assert_eq!(answer.trim(), "ping");
    // A module that is not WebAssembly is refused at deploy, with the reason.
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["fn", "deploy", "bad", "--wasm"])
        .arg(&bad)
        .args(["--trigger", "http", "--http", &server.http])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start the function"), "{err}");
}
