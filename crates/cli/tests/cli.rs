//! The `freshet` command line against a real server: topic, produce, consume.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Server;

fn freshet(server: &Server, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .args(["--bootstrap", &server.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn topic_produce_consume() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    ok(freshet(
        &server,
        &["topic", "create", "events", "--partitions", "3", "--config", "retention.ms=86400000"],
        None,
    ));
    let list = ok(freshet(&server, &["topic", "list"], None));
    assert!(list.contains("events\t3 partitions"), "{list}");

    // Keys choose partitions with Kafka's murmur2 partitioner, so a key always lands in the same one.
    let lines: String = (0..30).map(|i| format!("user-{}:event {i}\n", i % 5)).collect();
    ok(freshet(
        &server,
        &["produce", "events", "--key-separator", ":", "-H", "source=cli", "--compression", "lz4"],
        Some(&lines),
    ));
    let out = ok(freshet(
        &server,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--print-key",
            "--print-partition",
            "--print-offset",
            "--print-headers",
        ],
        None,
    ));
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 30, "{out}");
    let mut partition_of_key = std::collections::HashMap::new();
    for row in &rows {
        let [partition, _offset, key, headers, value] = row[..] else { panic!("row {row:?}") };
        assert_eq!(headers, "source=cli");
        assert!(value.starts_with("event "));
        assert_eq!(*partition_of_key.entry(key).or_insert(partition), partition, "key {key} moved partitions");
    }
    // Per partition, events keep the order they were produced in.
    for p in ["0", "1", "2"] {
        let seq: Vec<u32> =
            rows.iter().filter(|r| r[0] == p).map(|r| r[4].trim_start_matches("event ").parse().unwrap()).collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "partition {p}: {seq:?}");
    }
    // A single partition from an offset, limited.
    let first = rows.iter().find(|r| r[1] == "1").unwrap();
    let out = ok(freshet(
        &server,
        &["consume", "events", "--partition", first[0], "--offset", "1", "--max-messages", "1", "--print-offset"],
        None,
    ));
    assert_eq!(out.lines().next().unwrap().split('\t').next(), Some("1"));

    // Describe shows offsets and the override; alter changes configs and partitions.
    let out = ok(freshet(&server, &["topic", "describe", "events"], None));
    assert!(out.contains("*retention.ms=86400000"), "{out}");
    ok(freshet(&server, &["topic", "alter", "events", "--set", "retention.ms=1000", "--partitions", "4"], None));
    let out = ok(freshet(&server, &["topic", "describe", "events"], None));
    assert!(
        out.contains("*retention.ms=1000") && out.lines().filter(|l| l.trim_start().starts_with('3')).count() >= 1,
        "{out}"
    );

    // Errors are clear and exit non-zero.
    let out = freshet(&server, &["topic", "create", "events"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TopicAlreadyExists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = freshet(&server, &["produce", "events", "--acks", "2"], Some("x\n"));
    assert!(!out.status.success());

    ok(freshet(&server, &["topic", "delete", "events"], None));
    assert!(!ok(freshet(&server, &["topic", "list"], None)).contains("events"));
}

#[test]
fn group_list_describe_reset_and_delete() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::Message;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    ok(freshet(&server, &["topic", "create", "clicks", "--partitions", "2"], None));
    let lines: String = (0..20).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(freshet(&server, &["produce", "clicks", "--key-separator", ":"], Some(&lines)));
    // A member of group "reporting" consumes every record and commits, then leaves.
    {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &server.addr)
            .set("group.id", "reporting")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["clicks"]).unwrap();
        let mut n = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while n < 20 {
            assert!(std::time::Instant::now() < deadline, "no records for the group member");
            if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(200)) {
                consumer.commit_message(&m, CommitMode::Sync).unwrap();
                n += 1;
                let _ = m.offset();
            }
        }
    }
    let list = ok(freshet(&server, &["group", "list"], None));
    assert!(list.contains("reporting\tconsumer"), "{list}");
    let out = ok(freshet(&server, &["group", "describe", "reporting"], None));
    assert!(out.contains("total lag: 0") && out.contains("clicks") && out.lines().count() >= 4, "{out}");
    // A dry run changes nothing; --execute moves the offsets.
    let plan =
        ok(freshet(&server, &["group", "reset-offsets", "reporting", "--topic", "clicks", "--to-earliest"], None));
    assert!(plan.contains("dry run"), "{plan}");
    assert!(ok(freshet(&server, &["group", "describe", "reporting"], None)).contains("total lag: 0"));
    ok(freshet(
        &server,
        &["group", "reset-offsets", "reporting", "--topic", "clicks", "--to-earliest", "--execute"],
        None,
    ));
    assert!(ok(freshet(&server, &["group", "describe", "reporting"], None)).contains("total lag: 20"));
    ok(freshet(
        &server,
        &["group", "reset-offsets", "reporting", "--topic", "clicks", "--shift-by", "3", "--execute"],
        None,
    ));
    assert!(ok(freshet(&server, &["group", "describe", "reporting"], None)).contains("total lag: 14"));
    ok(freshet(&server, &["group", "delete", "reporting"], None));
    assert!(!ok(freshet(&server, &["group", "list"], None)).contains("reporting"));
    let out = freshet(&server, &["group", "delete", "reporting"], None);
    assert!(!out.status.success(), "deleting a missing group fails");
}

#[test]
fn sql_test_runs_ksqldb_format_cases_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let cases = r#"{
      // comments are allowed, as in ksqlDB's files
      "tests": [
        {
          "name": "passes",
          "statements": [
            "CREATE STREAM I (K STRING KEY, V INT) WITH (kafka_topic='i', value_format='JSON');",
            "CREATE STREAM O AS SELECT K, V * 10 AS W FROM I WHERE V > 1;"
          ],
          "inputs": [{"topic": "i", "key": "a", "value": {"V": 1}}, {"topic": "i", "key": "b", "value": {"V": 2}}],
          "outputs": [{"topic": "O", "key": "b", "value": {"W": 20}}]
        },
        {
          "name": "fails",
          "statements": [
            "CREATE STREAM I (K STRING KEY, V INT) WITH (kafka_topic='i', value_format='JSON');",
            "CREATE STREAM O AS SELECT K, V FROM I;"
          ],
          "inputs": [{"topic": "i", "key": "a", "value": {"V": 1}}],
          "outputs": [{"topic": "O", "key": "a", "value": {"V": 2}}]
        },
        {
          "name": "expected error",
          "statements": ["CREATE STREAM O AS SELECT * FROM MISSING;"],
          "expectedException": {"type": "x", "message": "MISSING does not exist"}
        },
        {
          "name": "needs a registry",
          "statements": ["CREATE STREAM I (V INT) WITH (kafka_topic='i', value_format='AVRO');"]
        }
      ]
    }"#;
    let file = dir.path().join("cases.json");
    std::fs::write(&file, cases).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_freshet")).arg("sql-test").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL cases.json: fails"), "{stdout}");
    assert!(stdout.contains(r#"value={"V":1}"#), "actual record shown: {stdout}");
    assert!(stdout.trim_end().ends_with("2 passed, 1 failed, 1 skipped"), "{stdout}");
    // The ratchet turns too few passes into a failing exit status.
    let out = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["sql-test", "--min-passed", "3"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
