//! The REST-format runner of `freshet sql-test` (ksqlDB's `rest-query-validation-tests`).
//!
//! Each case runs against a fresh server in this process: the embedded broker in a temporary
//! directory, the SQL engine thread and the HTTP listener on an ephemeral port, exactly as
//! `freshet serve` wires them. Statements and queries go over HTTP (`POST /ksql`, `POST
//! /query`), as ksqlDB's harness sends them: the statements before the first SELECT in one
//! request, inputs produced, the persistent queries caught up, then each SELECT on its own.
//! Inputs are written and outputs read on the engine's thread (`Request::Inspect`), with the
//! sources' formats, like the harness's producer and consumer.
//!
//! Where ksqlDB's order is an accident of its storage (a table scan's rows come in the order of
//! its partitions' RocksDB keys), rows of a pull query are compared as a multiset when they do
//! not match in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use freshet_broker::{Broker, BrokerConfig};
use freshet_common::config::TopicConfig;
use freshet_log::fs::StdFs;
use freshet_sql::testcase::{case_statements, compare_outputs, encode_input, json_eq, Verdict};
use freshet_sql::topics::Topics;
use serde_json::{json, Value as Json};
use tokio::sync::watch;

use crate::sql::broker_topics::BrokerTopics;
use crate::sql::ksql::SqlServer;
use crate::sql::runner::{EngineThread, Request};

/// Partitions of the topics a case does not size itself (ksqlDB's harness creates more than
/// one, which is why its cases pin `partitions: 1` where order matters).
const DEFAULT_PARTITIONS: i32 = 4;

/// Longest wait for one HTTP answer or one engine inspection.
const WAIT: Duration = Duration::from_secs(20);

/// Runs REST-format cases, one fresh server per case.
pub struct RestRunner {
    runtime: tokio::runtime::Runtime,
}

struct TestServer {
    broker: Arc<Broker>,
    topics: Arc<BrokerTopics>,
    engine: Option<EngineThread>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Result<TestServer> {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        // Test data needs no fsync per write.
        let topic_defaults = TopicConfig::from_pairs([("flush.messages", "1000000")]).expect("valid config");
        let config = BrokerConfig { data_dir: dir.path().to_path_buf(), topic_defaults, ..Default::default() };
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, Arc::new(StdFs))).await??;
        let background = broker.spawn_background();
        let topics = Arc::new(BrokerTopics::new(broker.clone(), tokio::runtime::Handle::current()));
        let t = topics.clone();
        let engine = tokio::task::spawn_blocking(move || EngineThread::start(t, None)).await??;
        let listener = crate::sql::http::bind("127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let http = tokio::spawn(crate::sql::http::serve(
            listener,
            engine.tx.clone(),
            broker.cluster_id().to_string(),
            axum::Router::new(),
            stop_rx,
        ));
        Ok(TestServer { broker, topics, engine: Some(engine), http, stop, background, addr, _dir: dir })
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, &mut self.http).await;
        if let Some(engine) = self.engine.take() {
            let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
        }
        for task in &self.background {
            task.abort();
        }
        let b = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.close()).await;
    }

    /// Runs `f` on the engine's thread and waits (bounded) for its result.
    fn inspect<T: Send + 'static>(&self, f: impl FnOnce(&mut SqlServer) -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.as_ref().context("the engine is stopped")?;
        engine
            .tx
            .send(Request::Inspect(Box::new(move |s| {
                let _ = tx.send(f(s));
            })))
            .ok()
            .context("the engine thread is gone")?;
        rx.recv_timeout(WAIT).context("the engine did not answer in time")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// An HTTP answer: status and body (JSON when it parses).
struct HttpAnswer {
    status: u16,
    body: Json,
    text: String,
}

fn post(agent: &ureq::Agent, url: &str, body: &Json) -> Result<HttpAnswer> {
    let (status, text) = match agent.post(url).set("Content-Type", "application/json").send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.into_string()?),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => return Err(e.into()),
    };
    let body = serde_json::from_str(&text).unwrap_or(Json::Null);
    Ok(HttpAnswer { status, body, text })
}

impl RestRunner {
    pub fn new() -> Result<RestRunner> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(RestRunner { runtime })
    }

    /// Runs one case with `{FORMAT}` and `{CONFIG}` replaced.
    pub fn run(&mut self, case: &Json, format: Option<&str>, config: Option<&Json>) -> Verdict {
        let server = match self.runtime.block_on(TestServer::start()) {
            Ok(s) => s,
            Err(e) => return Verdict::Fail(format!("cannot start a server: {e:#}")),
        };
        let verdict = drive(&server, case, format, config).unwrap_or_else(|e| Verdict::Fail(format!("{e:#}")));
        self.runtime.block_on(server.stop());
        verdict
    }
}

/// The case's properties, `{CONFIG}` replaced; new queries read from the earliest offsets, as
/// in ksqlDB's harness.
fn properties(case: &Json, config: Option<&Json>) -> serde_json::Map<String, Json> {
    let mut props = serde_json::Map::new();
    if let Some(p) = case["properties"].as_object() {
        for (k, v) in p {
            let v = match v {
                Json::String(t) if t == "{CONFIG}" => match config {
                    Some(c) => c.clone(),
                    None => continue,
                },
                other => other.clone(),
            };
            props.insert(k.clone(), v);
        }
    }
    props.entry("ksql.streams.auto.offset.reset").or_insert(json!("earliest"));
    props
}

/// Writes the case's inputs, in order, each to the partition Kafka's default partitioner picks.
fn produce_inputs(server: &TestServer, case: &Json) -> Result<Result<(), String>> {
    let inputs = case["inputs"].as_array().cloned().unwrap_or_default();
    let topics = server.topics.clone();
    server.inspect(move |s| {
        for input in inputs {
            let topic = input["topic"].as_str().unwrap_or_default().to_string();
            let sources = s.engine.catalog.by_topic(&topic);
            let source = sources.iter().find(|s| s.writer.is_none()).or_else(|| sources.first()).map(|s| (*s).clone());
            let record =
                encode_input(&input, source.as_ref()).map_err(|e| format!("cannot encode input {input}: {e}"))?;
            if topics.partitions(&topic).is_none() {
                topics.create_topic(&topic, DEFAULT_PARTITIONS).map_err(|e| e.to_string())?;
            }
            let partitions = topics.partitions(&topic).unwrap_or(1);
            let partition = match (&record.key, input["partition"].as_i64()) {
                (_, Some(p)) => p as i32,
                (Some(k), None) if partitions > 1 => freshet_common::partitioner::partition_for_key(k, partitions),
                _ => 0,
            };
            topics.append(&topic, partition, vec![record]).map_err(|e| format!("cannot write input: {e}"))?;
        }
        Ok(())
    })
}

/// The verdict on an HTTP error: a pass when the case expects this error.
fn error_verdict(case: &Json, statement: &str, answer: &HttpAnswer) -> Verdict {
    let Some(expected) = case.get("expectedError") else {
        return Verdict::Fail(format!(
            "the server failed the statement: {statement}\n  HTTP {}: {}",
            answer.status, answer.text
        ));
    };
    let message = answer.body["message"].as_str().unwrap_or(&answer.text);
    let want_message = expected["message"].as_str().unwrap_or("");
    let want_status = expected["status"].as_u64();
    if !message.contains(want_message) {
        return Verdict::Fail(format!("expected an error containing: {want_message}\n       got error: {message}"));
    }
    if want_status.is_some_and(|s| s != answer.status as u64) {
        return Verdict::Fail(format!("expected HTTP {}, got HTTP {}", want_status.unwrap_or(0), answer.status));
    }
    Verdict::Pass
}

fn drive(server: &TestServer, case: &Json, format: Option<&str>, config: Option<&Json>) -> Result<Verdict> {
    let statements = case_statements(case, format);
    let props = properties(case, config);
    let agent = ureq::AgentBuilder::new().timeout(WAIT).build();

    let declared: Vec<(String, i32)> = case["topics"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| Some((t["name"].as_str()?.to_string(), t["partitions"].as_i64().unwrap_or(1) as i32)))
                .collect()
        })
        .unwrap_or_default();
    let topics = server.topics.clone();
    server.inspect(move |s| {
        s.engine.auto_create_topics = true;
        s.engine.default_partitions = DEFAULT_PARTITIONS;
        for (name, partitions) in declared {
            let _ = topics.create_topic(&name, partitions);
        }
    })?;

    let first_query = statements
        .iter()
        .position(|s| s.trim_start().to_ascii_uppercase().starts_with("SELECT "))
        .unwrap_or(statements.len());
    let (admin, queries) = statements.split_at(first_query);
    let mut responses: Vec<Json> = vec![];
    if !admin.is_empty() {
        let sql = admin.join("\n");
        let answer = post(&agent, &server.url("/ksql"), &json!({ "ksql": sql, "streamsProperties": props }))?;
        if answer.status != 200 {
            return Ok(error_verdict(case, &sql, &answer));
        }
        for entity in answer.body.as_array().cloned().unwrap_or_default() {
            responses.push(json!({ "admin": entity }));
        }
    }

    let wait_for_header = case["inputConditions"]["waitForQueryHeader"].as_bool().unwrap_or(false);
    if !wait_for_header {
        if let Err(e) = produce_inputs(server, case)? {
            return Ok(Verdict::Fail(e));
        }
    }
    // Catch the persistent queries up with their inputs.
    server.inspect(|s| {
        s.step();
    })?;

    for (i, q) in queries.iter().enumerate() {
        let body = json!({ "ksql": q, "streamsProperties": props });
        let answer = if wait_for_header && i == 0 {
            stream_query(server, &agent, &body, case)?
        } else {
            post(&agent, &server.url("/query"), &body)?
        };
        if answer.status != 200 {
            return Ok(error_verdict(case, q, &answer));
        }
        let elements = match &answer.body {
            Json::Array(a) => a.clone(),
            _ => return Ok(Verdict::Fail(format!("the answer to {q} is not a JSON array: {}", answer.text))),
        };
        responses.push(json!({ "query": elements }));
    }
    if let Some(e) = case.get("expectedError") {
        return Ok(Verdict::Fail(format!(
            "expected an error containing: {}\n  but every statement succeeded",
            e["message"].as_str().unwrap_or("")
        )));
    }

    let check = case.clone();
    let topics = server.topics.clone();
    let outputs = server.inspect(move |s| {
        s.step();
        compare_outputs(&check, &s.engine, topics.as_ref())
    })?;
    if outputs != Verdict::Pass {
        return Ok(outputs);
    }
    Ok(compare_responses(case, &responses, &statements))
}

/// A push query whose inputs are produced once its header has arrived.
fn stream_query(server: &TestServer, agent: &ureq::Agent, body: &Json, case: &Json) -> Result<HttpAnswer> {
    use std::io::{BufRead, BufReader, Read};
    let response = match agent
        .post(&server.url("/query"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Json::Null);
            return Ok(HttpAnswer { status: code, body, text });
        }
        Err(e) => return Err(e.into()),
    };
    let status = response.status();
    let mut reader = BufReader::new(response.into_reader());
    let mut text = String::new();
    reader.read_line(&mut text)?;
    if let Err(e) = produce_inputs(server, case)? {
        anyhow::bail!(e);
    }
    reader.read_to_string(&mut text)?;
    let body = serde_json::from_str(&text).unwrap_or(Json::Null);
    Ok(HttpAnswer { status, body, text })
}

/// Replaces `{STATEMENT}` in an expected string with the statement it answers.
fn expand(v: &Json, statement: Option<&String>) -> Json {
    match (v, statement) {
        (Json::String(s), Some(st)) => Json::String(s.replace("{STATEMENT}", st)),
        _ => v.clone(),
    }
}

/// ksqlDB's harness match: every field the expected object names must be in the actual one and
/// equal (objects recursively; `field|startsWith` compares a prefix); other fields are free.
fn match_fields(actual: &Json, expected: &Json, statement: Option<&String>, path: &str) -> Result<(), String> {
    let Some(expected) = expected.as_object() else {
        return if json_eq(&expand(expected, statement), actual) {
            Ok(())
        } else {
            Err(format!("{path}: expected {expected}, got {actual}"))
        };
    };
    for (key, want) in expected {
        let (name, starts_with) = match key.split_once('|') {
            Some((n, op)) => (n, op.eq_ignore_ascii_case("startsWith") || op.eq_ignore_ascii_case("starts_with")),
            None => (key.as_str(), false),
        };
        let here = format!("{path}->{name}");
        let Some(got) = actual.get(name) else {
            return Err(format!("{here}: missing in {actual}"));
        };
        let want = expand(want, statement);
        if want.is_object() {
            match_fields(got, &want, statement, &here)?;
        } else if starts_with {
            let ok = matches!((got.as_str(), want.as_str()), (Some(g), Some(w)) if g.starts_with(w));
            if !ok {
                return Err(format!("{here}: expected a string starting with {want}, got {got}"));
            }
        } else if !json_eq(&want, got) {
            return Err(format!("{here}: expected {want}, got {got}"));
        }
    }
    Ok(())
}

fn compare_responses(case: &Json, actual: &[Json], statements: &[String]) -> Verdict {
    let expected = case["responses"].as_array().cloned().unwrap_or_default();
    if actual.len() < expected.len() {
        return Verdict::Fail(format!(
            "expected {} responses, got {}:\n  {}",
            expected.len(),
            actual.len(),
            actual.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("\n  ")
        ));
    }
    for (idx, want) in expected.iter().enumerate() {
        let Some((kind, payload)) = want.as_object().and_then(|o| o.iter().next()) else {
            return Verdict::Fail(format!("response {idx}: malformed expectation {want}"));
        };
        let got = &actual[idx];
        let Some(got_payload) = got.get(kind) else {
            return Verdict::Fail(format!("response {idx}: expected a {kind} response, got {got}"));
        };
        let statement = statements.get(idx);
        let path = format!("responses[{idx}]->{kind}");
        match kind.as_str() {
            "query" => {
                let want_rows = payload.as_array().cloned().unwrap_or_default();
                let got_rows = got_payload.as_array().cloned().unwrap_or_default();
                let show = |rows: &[Json]| rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n      ");
                let mismatch = |why: String| {
                    Verdict::Fail(format!(
                        "{path}: {why}\n  expected:\n      {}\n  actual:\n      {}",
                        show(&want_rows),
                        show(&got_rows)
                    ))
                };
                if want_rows.len() != got_rows.len() {
                    return mismatch(format!("expected {} elements, got {}", want_rows.len(), got_rows.len()));
                }
                let in_order = want_rows
                    .iter()
                    .zip(&got_rows)
                    .enumerate()
                    .try_for_each(|(i, (w, g))| match_fields(g, w, statement, &format!("{path}[{i}]")));
                if let Err(why) = in_order {
                    let is_pull = statement.is_some_and(|s| !s.to_ascii_uppercase().contains("EMIT "));
                    if !(is_pull && same_multiset(&want_rows, &got_rows, statement)) {
                        return mismatch(why);
                    }
                }
            }
            _ => {
                if let Err(why) = match_fields(got_payload, payload, statement, &path) {
                    return Verdict::Fail(why);
                }
            }
        }
    }
    Verdict::Pass
}

/// Whether every expected element matches a distinct actual one.
fn same_multiset(want: &[Json], got: &[Json], statement: Option<&String>) -> bool {
    let mut used = vec![false; got.len()];
    want.iter().all(|w| {
        let found = got.iter().enumerate().position(|(i, g)| !used[i] && match_fields(g, w, statement, "").is_ok());
        if let Some(i) = found {
            used[i] = true;
        }
        found.is_some()
    })
}
