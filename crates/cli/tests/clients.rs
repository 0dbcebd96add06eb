//! Existing Kafka clients, unchanged, against a real `freshet serve`: Debian's kcat (librdkafka
//! 2.0.2), confluent-kafka (current librdkafka), kafka-python and kafkajs. Each writes records
//! with keys and headers to a 3-partition topic with acks=all and reads them back exactly; then
//! the server is killed with SIGKILL, restarted, and the records are read again.
//!
//! The clients come from `.ci/run` (apt, a Python venv, npm). Where one is missing the test says
//! so and skips it, unless FRESHET_REQUIRE_CLIENTS=1 (as in CI), which makes that a failure.
//! FRESHET_PYTHON names the venv's python; FRESHET_NODE_PATH the node_modules holding kafkajs.
//! kafka-python produces with its default idempotence; kafkajs reads through a consumer group.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{missing, python, repo, Server};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const COUNT: &str = "300";

fn node_path() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("FRESHET_NODE_PATH")?);
    (p.join("kafkajs").exists() && which("node")).then_some(p)
}

fn which(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// Runs a client command to completion (bounded), failing the test with its output if it fails.
fn run(mut cmd: Command, what: &str) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(status.success(), "{what} failed ({status}):\n{text}");
            eprintln!("{what}: {}", text.lines().rfind(|l| l.starts_with("ok")).unwrap_or("ok"));
            return;
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            panic!("{what} did not finish within {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn script(kind: &str, mode: &str, server: &Server, topic: &str, client: &str) -> Command {
    let dir = repo().join("tests/clients");
    let mut cmd = match kind {
        "confluent" | "kafka-python" => {
            let file = if kind == "confluent" { "confluent_client.py" } else { "kafka_python_client.py" };
            let mut c = Command::new(python().expect("python"));
            c.arg(dir.join("python").join(file));
            c
        }
        "kafkajs" => {
            let mut c = Command::new("node");
            c.arg(dir.join("node/kafkajs_client.js"))
                .env("NODE_PATH", node_path().expect("node path"))
                .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
            c
        }
        "kcat" => {
            let mut c = Command::new("bash");
            c.arg(dir.join("kcat/kcat_client.sh"));
            c
        }
        other => panic!("unknown client {other}"),
    };
    cmd.arg(mode).args(["--bootstrap", &server.addr, "--topic", topic, "--count", COUNT, "--client", client]);
    cmd
}

/// produce with `writer`, verify with `reader`, SIGKILL, restart, verify again.
fn round_trip(writer: &str, reader: &str, create_topic_first: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let topic = format!("{writer}-records");
    if create_topic_first {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let c = freshet_client::Client::connect(&server.addr).await.unwrap();
            c.create_topic(&topic, 3, &[]).await.unwrap();
        });
    }
    run(script(writer, "produce", &server, &topic, writer), &format!("{writer} produce"));
    run(script(reader, "verify", &server, &topic, writer), &format!("{reader} verify"));
    server.kill();
    server.restart();
    run(script(reader, "verify", &server, &topic, writer), &format!("{reader} verify after SIGKILL"));
}

#[test]
fn kcat_librdkafka_2_0_2() {
    if !which("kcat") {
        return missing("kcat");
    }
    round_trip("kcat", "kcat", true);
}

#[test]
fn confluent_kafka_python() {
    if python().is_none() {
        return missing("python with confluent-kafka (FRESHET_PYTHON)");
    }
    round_trip("confluent", "confluent", false);
}

#[test]
fn kafka_python() {
    if python().is_none() {
        return missing("python with kafka-python (FRESHET_PYTHON)");
    }
    round_trip("kafka-python", "kafka-python", false);
}

#[test]
fn kafkajs() {
    if node_path().is_none() {
        return missing("node with kafkajs (FRESHET_NODE_PATH)");
    }
    // kafkajs reads through a consumer group (it has no other way).
    round_trip("kafkajs", "kafkajs", false);
}
