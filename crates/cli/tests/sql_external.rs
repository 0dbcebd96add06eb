//! The SQL engine against an existing Kafka-protocol cluster: a second process,
//! `freshet serve --external-kafka`, runs only the SQL engine and the REST API, with every topic
//! (its command and progress topics included) in the cluster of a first `freshet serve`. Records
//! are checked by reading the cluster with the workspace's Kafka client; no librdkafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::rest::{get, ksql, names, query, rows};
use common::{wait_until, Server};
use freshet_client::records::{self, Compression, NewRecord};
use freshet_client::Client;
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A record read from the cluster: key, JSON value, headers.
type Read = (String, Json, Vec<(String, Option<Bytes>)>);

/// Every record of every partition of `topic`, read from the cluster (None while the topic does
/// not exist); and the partition count.
fn read_topic(addr: &str, topic: &str) -> Option<(usize, Vec<Read>)> {
    runtime().block_on(async {
        let client = tokio::time::timeout(WAIT, Client::connect(addr)).await.ok()?.ok()?;
        let info = client.topic(topic).await.ok()?;
        let mut out = vec![];
        for p in &info.partitions {
            let mut at = 0;
            loop {
                let (bytes, high_watermark) =
                    client.fetch(topic, p.index, at, Duration::from_millis(10), 1 << 20).await.ok()?;
                let batch = records::decode(&bytes).ok()?;
                if batch.is_empty() {
                    break;
                }
                for r in batch {
                    at = r.offset + 1;
                    let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                    let value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).ok()?;
                    let headers = r.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                    out.push((key, value, headers));
                }
                if at >= high_watermark {
                    break;
                }
            }
        }
        Some((info.partitions.len(), out))
    })
}

/// Produces one record with a header straight to the cluster.
fn produce_with_header(addr: &str, topic: &str, key: &str, value: Json) {
    runtime().block_on(async {
        let client = Client::connect(addr).await.expect("connect");
        let record = NewRecord {
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: vec![("source".to_string(), Some(Bytes::from_static(b"test")))],
            timestamp: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
        };
        let batch = records::encode(&[record], Compression::None).expect("encode");
        tokio::time::timeout(WAIT, client.produce(topic, 0, batch, -1)).await.expect("in time").expect("produced");
    })
}

/// The values of `topic` by key, once `done` says they are complete.
fn wait_for_records(addr: &str, topic: &str, what: &str, done: impl Fn(&[Read]) -> bool) -> Vec<Read> {
    wait_until(WAIT, what, || read_topic(addr, topic).map(|(_, r)| r).filter(|r| done(r)))
}

#[test]
fn the_sql_engine_runs_against_an_external_kafka_cluster_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The "existing cluster": a normal server. The SQL engine under test runs in a second
    // process with no broker of its own.
    let mut cluster = Server::start(dir.path());
    let mut sql = Server::start_external(&cluster.addr, &[]);
    assert!(!sql.http.is_empty());
    assert_eq!(
        get(&sql.http, "/info").1["KsqlServerInfo"]["kafkaClusterId"],
        get(&cluster.http, "/info").1["KsqlServerInfo"]["kafkaClusterId"],
        "the SQL process reports the external cluster's id"
    );

    let (status, body) = ksql(
        &sql.http,
        "CREATE STREAM orders (order_key STRING KEY, id BIGINT, amount DOUBLE, customer STRING, src BYTES HEADER('source'))
             WITH (KAFKA_TOPIC='orders', PARTITIONS=2, VALUE_FORMAT='JSON');
         CREATE STREAM big AS SELECT order_key, id, amount, customer, src FROM orders WHERE amount > 100;
         CREATE TABLE totals AS SELECT customer, COUNT(*) AS orders, SUM(amount) AS total FROM orders GROUP BY customer;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 3, "{body}");
    let (status, body) = ksql(
        &sql.http,
        "INSERT INTO orders (order_key, id, amount, customer) VALUES ('k1', 1, 50.0, 'ann');
         INSERT INTO orders (order_key, id, amount, customer) VALUES ('k2', 2, 150.5, 'bob');
         INSERT INTO orders (order_key, id, amount, customer) VALUES ('k3', 3, 200.0, 'ann');
         INSERT INTO orders (order_key, id, amount, customer) VALUES ('k4', 4, 99.0, 'cy');
         INSERT INTO orders (order_key, id, amount, customer) VALUES ('k5', 5, 101.0, 'bob');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    // A client of the cluster writes too, with a header the stream reads.
    produce_with_header(&cluster.addr, "orders", "k6", json!({ "ID": 6, "AMOUNT": 600.0, "CUSTOMER": "dee" }));

    // Everything lives in the cluster: the input with its two partitions, the engine's own
    // topics, and the output, read back with a Kafka client.
    let (partitions, input) = read_topic(&cluster.addr, "orders").expect("the input topic is in the cluster");
    assert_eq!(partitions, 2);
    assert_eq!(input.len(), 6, "{input:?}");
    assert!(read_topic(&cluster.addr, "_freshet_sql_commands").is_some_and(|(_, c)| c.len() >= 3));
    assert!(read_topic(&cluster.addr, "_freshet_sql_progress").is_some());
    let big = wait_for_records(&cluster.addr, "BIG", "the filtered orders", |r| r.len() >= 4);
    let by_key: BTreeMap<&str, &Json> = big.iter().map(|(k, v, _)| (k.as_str(), v)).collect();
    assert_eq!(by_key.keys().copied().collect::<Vec<_>>(), ["k2", "k3", "k5", "k6"], "{big:?}");
    assert_eq!(big.len(), 4, "no duplicates: {big:?}");
    assert_eq!(by_key["k2"]["AMOUNT"], json!(150.5));
    assert_eq!(by_key["k2"]["CUSTOMER"], json!("bob"));
    // SRC: the header the client wrote, read by the engine (BYTES are base64 in JSON).
    assert_eq!(by_key["k6"]["SRC"], json!("dGVzdA=="));

    // The table answers pull queries.
    let ann = |http: &str| {
        let (status, answer) = query(http, "SELECT * FROM totals WHERE customer = 'ann';", json!({}));
        assert_eq!(status, 200, "{answer:?}");
        rows(&answer)
    };
    wait_until(WAIT, "ann's totals", || (ann(&sql.http) == [json!(["ann", 2, 250.0])]).then_some(()));
    let (_, all) = query(&sql.http, "SELECT customer, orders, total FROM totals;", json!({}));
    assert_eq!(
        rows(&all),
        [json!(["ann", 2, 250.0]), json!(["bob", 2, 251.5]), json!(["cy", 1, 99.0]), json!(["dee", 1, 600.0])]
    );

    // SHOW TOPICS lists the cluster's topics, without the internal ones.
    let (status, body) = ksql(&sql.http, "SHOW TOPICS;", json!({}));
    assert_eq!(status, 200, "{body}");
    let topics = names(&body[0], "topics");
    assert!(topics.contains(&"orders".to_string()) && topics.contains(&"BIG".to_string()), "{topics:?}");
    assert!(!topics.iter().any(|t| t.starts_with('_')), "{topics:?}");

    // Restart the SQL process (SIGTERM: a clean stop): the statements come back from the command
    // topic in the cluster, and the queries go on from where they were.
    assert!(sql.stop().success(), "a clean shutdown");
    sql.restart();
    let (status, body) = ksql(&sql.http, "SHOW STREAMS; SHOW TABLES; SHOW QUERIES;", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body[0], "streams"), ["BIG", "ORDERS"]);
    assert_eq!(names(&body[1], "tables"), ["TOTALS"]);
    assert_eq!(body[2]["queries"].as_array().unwrap().len(), 2, "{body}");
    wait_until(WAIT, "ann's totals after the restart", || (ann(&sql.http) == [json!(["ann", 2, 250.0])]).then_some(()));

    let (status, body) = ksql(
        &sql.http,
        "INSERT INTO orders (order_key, id, amount, customer) VALUES ('k7', 7, 300.0, 'ann');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let big = wait_for_records(&cluster.addr, "BIG", "the order inserted after the restart", |r| {
        r.iter().any(|(k, _, _)| k == "k7")
    });
    let mut keys: Vec<&str> = big.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["k2", "k3", "k5", "k6", "k7"], "earlier outputs are not written again");
    wait_until(WAIT, "ann's totals with the new order", || {
        (ann(&sql.http) == [json!(["ann", 3, 550.0])]).then_some(())
    });

    // The cluster restarts under the running SQL process: it connects again, and a write
    // (not repeated blindly) goes out on the new connection, once. (Only the input is checked:
    // the cluster is itself a `freshet serve`, whose own SQL engine replays the same command
    // topic when it restarts and so runs the same queries from then on.)
    assert!(cluster.stop().success());
    cluster.restart();
    let (status, body) = ksql(
        &sql.http,
        "INSERT INTO orders (order_key, id, amount, customer) VALUES ('k8', 8, 400.0, 'ann');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let input = wait_for_records(&cluster.addr, "orders", "the order inserted after the cluster's restart", |r| {
        r.iter().any(|(k, _, _)| k == "k8")
    });
    assert_eq!(input.iter().filter(|(k, _, _)| k == "k8").count(), 1, "{input:?}");
    assert!(sql.stop().success());
}

/// Produces JSON records `{"N": i}` keyed `k<i>` for `i` in `range` straight to the cluster.
fn produce_range(addr: &str, topic: &str, range: std::ops::Range<i64>) {
    produce_range_to(addr, topic, 0, "k", range)
}

/// Produces JSON records `{"N": i}` keyed `<prefix><i>` for `i` in `range` to `partition`.
fn produce_range_to(addr: &str, topic: &str, partition: i32, prefix: &str, range: std::ops::Range<i64>) {
    runtime().block_on(async {
        let client = Client::connect(addr).await.expect("connect");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let batch: Vec<NewRecord> = range
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("{prefix}{i}"))),
                value: Some(Bytes::from(json!({ "N": i }).to_string())),
                headers: vec![],
                timestamp: now,
            })
            .collect();
        let batch = records::encode(&batch, Compression::None).expect("encode");
        let produced = client.produce(topic, partition, batch, -1);
        tokio::time::timeout(WAIT, produced).await.expect("in time").expect("produced");
    })
}

/// The ids of the queries a server runs (all their tasks or some), from `GET /sql/placement`.
fn running(http: &str) -> BTreeSet<String> {
    placement_list(http, "running")
}

/// A list of strings of `GET /sql/placement`'s answer.
fn placement_list(http: &str, field: &str) -> BTreeSet<String> {
    let (status, body) = get(http, "/sql/placement");
    assert_eq!(status, 200, "{body}");
    body[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Creates the stream `src` (topic `src`, one partition) the tests' queries read.
fn create_src(http: &str) {
    let (status, body) = ksql(
        http,
        "CREATE STREAM src (k STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='src', PARTITIONS=1, VALUE_FORMAT='JSON');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
}

/// Waits until the two servers split `all` between them, each running some: returns what each
/// runs.
fn wait_for_split(a: &str, b: &str, all: &BTreeSet<String>) -> (BTreeSet<String>, BTreeSet<String>) {
    wait_until(WAIT, "the queries split between the two servers", || {
        let (ra, rb) = (running(a), running(b));
        let disjoint = ra.is_disjoint(&rb);
        let union: BTreeSet<String> = ra.union(&rb).cloned().collect();
        (disjoint && &union == all && !ra.is_empty() && !rb.is_empty()).then_some((ra, rb))
    })
}

/// Every output topic of `outs` holds exactly `n` records, one per input key: no input lost,
/// none written twice.
fn wait_for_outputs(addr: &str, outs: &[String], n: usize) {
    for out in outs {
        let records = wait_for_records(addr, out, &format!("{n} records in {out}"), |r| r.len() >= n);
        let keys: BTreeSet<&str> = records.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(records.len(), n, "{out}: no duplicates");
        assert_eq!(keys.len(), n, "{out}: every key once");
    }
}

/// SQL servers on one cluster split the persistent queries over their consumer group: each
/// query runs on exactly one of them; a statement run through one reaches the other through
/// the command topic; a server killed and restarted takes its queries back at once (a static
/// member), one that stops hands them over; no output is lost or written twice. (A `serve
/// --external-kafka` server and the cluster's own engine, itself a `freshet serve`.)
#[test]
fn sql_servers_split_the_queries_over_their_group() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut a = Server::start_external(&cluster.addr, &[]);
    let earliest = json!({ "ksql.streams.auto.offset.reset": "earliest" });
    create_src(&a.http);
    // Eight queries, half created through each server. (Each is one task, its input having one
    // partition: `CSAS_OUT<i>_<i>#0`, which hash to slots 13, 0, 5, 9, 12, 9, 3 and 11: both
    // halves of the slots and both parities, so any even split of the 16 slots between two
    // members gives each some.)
    let outs: Vec<String> = (0..8).map(|i| format!("OUT{i}")).collect();
    for (i, out) in outs.iter().enumerate() {
        let server = if i < 4 { &a } else { &cluster };
        let (status, body) =
            ksql(&server.http, &format!("CREATE STREAM {out} AS SELECT k, n FROM src WHERE n >= 0;"), earliest.clone());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body[0]["commandStatus"]["queryId"], json!(format!("CSAS_{out}_{i}")), "{body}");
    }
    let all: BTreeSet<String> = outs.iter().enumerate().map(|(i, o)| format!("CSAS_{o}_{i}")).collect();
    for server in [&a, &cluster] {
        wait_until(WAIT, "every server to know every query", || {
            let (_, body) = ksql(&server.http, "SHOW QUERIES;", json!({}));
            (body[0]["queries"].as_array().map(Vec::len) == Some(8)).then_some(())
        });
    }
    let (on_a, on_cluster) = wait_for_split(&a.http, &cluster.http, &all);
    eprintln!("split: {on_a:?} | {on_cluster:?}");
    produce_range(&cluster.addr, "src", 0..100);
    wait_for_outputs(&cluster.addr, &outs, 100);

    // A statement through one server stops a query the other runs.
    let victim = on_a.iter().next().unwrap().clone();
    let (status, body) = ksql(&cluster.http, &format!("TERMINATE {victim};"), json!({}));
    assert_eq!(status, 200, "{body}");
    wait_until(WAIT, "the terminated query to stop on the other server", || {
        (!running(&a.http).contains(&victim)).then_some(())
    });
    let all: BTreeSet<String> = all.into_iter().filter(|id| *id != victim).collect();
    let victim_out = outs.iter().find(|o| victim.starts_with(&format!("CSAS_{o}_"))).unwrap().clone();
    let live: Vec<String> = outs.iter().filter(|o| **o != victim_out).cloned().collect();

    // SIGKILL and restart: the server takes its slots back at once (well within the group's
    // 45 s session timeout), and its queries go on from their progress.
    a.kill();
    a.restart();
    wait_for_split(&a.http, &cluster.http, &all);
    produce_range(&cluster.addr, "src", 100..200);
    wait_for_outputs(&cluster.addr, &live, 200);

    // A clean stop hands the queries over: the cluster's engine runs them all.
    assert!(a.stop().success());
    wait_until(WAIT, "the cluster to run every query", || (running(&cluster.http) == all).then_some(()));
    produce_range(&cluster.addr, "src", 200..300);
    wait_for_outputs(&cluster.addr, &live, 300);
    let stopped = read_topic(&cluster.addr, &victim_out).unwrap().1;
    assert_eq!(stopped.len(), 100, "the terminated query wrote nothing more");
}

/// The keys of `topic`'s partition 0 as a `read_committed` consumer (librdkafka) sees them:
/// read until at least `want` came and then nothing more for a second (bounded by `WAIT`).
fn read_committed_keys(addr: &str, topic: &str, want: usize) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "sql-external-check")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let (deadline, mut last) = (std::time::Instant::now() + WAIT, std::time::Instant::now());
    let mut keys = vec![];
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
                last = std::time::Instant::now();
            }
            _ if keys.len() >= want && last.elapsed() > Duration::from_secs(1) => break,
            _ => {}
        }
    }
    keys
}

/// Exactly-once against an external cluster: a SQL server that dies with a Kafka transaction
/// open (a failpoint aborts the process after a step's transactional writes, before EndTxn)
/// aborts that transaction when it comes back (InitProducerId) and goes on from the progress
/// its last committed transaction recorded, so a read_committed consumer sees every output
/// exactly once, and sees them at once (no transaction left to time out).
#[test]
fn an_external_sql_server_dying_mid_transaction_writes_each_output_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut a = Server::start_external_env(&cluster.addr, &[], &[("FRESHET_FAILPOINTS", "sql-kafka-before-commit")]);
    create_src(&a.http);
    // Slots 13, 0, 5 and 9: each server of an even split gets at least one.
    let outs: Vec<String> = (0..4).map(|i| format!("OUT{i}")).collect();
    for out in &outs {
        let statement = format!("CREATE STREAM {out} AS SELECT k, n FROM src WHERE n >= 0;");
        let (status, body) = ksql(&a.http, &statement, json!({ "ksql.streams.auto.offset.reset": "earliest" }));
        assert_eq!(status, 200, "{body}");
    }
    let all: BTreeSet<String> = outs.iter().enumerate().map(|(i, o)| format!("CSAS_{o}_{i}")).collect();
    wait_for_split(&a.http, &cluster.http, &all);
    const N: i64 = 50_000;
    for start in (0..N).step_by(10_000) {
        produce_range(&cluster.addr, "src", start..start + 10_000);
    }
    // The first step of a query on `a` writes its outputs, then the process ends.
    assert!(a.wait_for_exit(WAIT), "the failpoint ended the external server");
    a.restart();
    for out in &outs {
        let keys = read_committed_keys(&cluster.addr, out, N as usize);
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), N as usize, "{out}: every input once");
        assert_eq!(keys.len(), N as usize, "{out}: no output twice");
    }
}

/// A query that keeps no state runs as one task per input partition, and the tasks of one
/// query spread over the servers: each server processes some partitions of the same stream.
/// When one stops, the other takes its partitions and goes on from their progress.
#[test]
fn a_stateless_query_splits_by_input_partition_over_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut a = Server::start_external(&cluster.addr, &[]);
    let (status, body) = ksql(
        &a.http,
        "CREATE STREAM wide_src (k STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='wide-src', PARTITIONS=4, VALUE_FORMAT='JSON');
         CREATE STREAM wide AS SELECT k, n FROM wide_src WHERE n >= 0;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[1]["commandStatus"]["queryId"], json!("CSAS_WIDE_0"), "{body}");
    // Its tasks `CSAS_WIDE_0#0`..`#3` hash to slots 5, 10, 11 and 5: both halves.
    let all: BTreeSet<String> = (0..4).map(|p| format!("CSAS_WIDE_0#{p}")).collect();
    let (on_a, on_cluster) = wait_until(WAIT, "the partitions split between the servers", || {
        let (ta, tc) = (placement_list(&a.http, "tasks"), placement_list(&cluster.http, "tasks"));
        let union: BTreeSet<String> = ta.union(&tc).cloned().collect();
        (ta.is_disjoint(&tc) && union == all && !ta.is_empty() && !tc.is_empty()).then_some((ta, tc))
    });
    eprintln!("tasks: {on_a:?} | {on_cluster:?}");
    let produce_all = |range: std::ops::Range<i64>| {
        for p in 0..4 {
            produce_range_to(&cluster.addr, "wide-src", p, &format!("p{p}-"), range.clone());
        }
    };
    produce_all(0..500);
    wait_for_outputs(&cluster.addr, &["WIDE".to_string()], 2000);

    assert!(a.stop().success());
    wait_until(WAIT, "the cluster to run every partition", || {
        (placement_list(&cluster.http, "tasks") == all).then_some(())
    });
    produce_all(500..1000);
    wait_for_outputs(&cluster.addr, &["WIDE".to_string()], 4000);
}

/// The latest value per key of a table's topic, read from the cluster.
fn latest_values(addr: &str, topic: &str) -> BTreeMap<String, Json> {
    read_topic(addr, topic).map(|(_, r)| r.into_iter().map(|(k, v, _)| (k, v)).collect()).unwrap_or_default()
}

/// An aggregation whose groups are not its input's keys runs as tasks over the servers: a
/// repartition task per input partition sends each record to the partition its group hashes
/// to, and an aggregation task per partition owns those groups' state (its own store file and
/// changelog partition). The tasks spread over both servers; after a SIGKILL and a restart
/// and after a clean stop, every count is exact (no record lost or counted twice).
#[test]
fn an_aggregation_splits_into_tasks_that_each_own_their_groups() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Server::start(dir.path());
    let mut a = Server::start_external(&cluster.addr, &[]);
    let (status, body) = ksql(
        &a.http,
        "CREATE STREAM agg_src (k STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='agg-src', PARTITIONS=4, VALUE_FORMAT='JSON');
         CREATE TABLE per_mod AS SELECT n % 10 AS m, COUNT(*) AS c, SUM(n) AS s FROM agg_src GROUP BY n % 10;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[1]["commandStatus"]["queryId"], json!("CTAS_PER_MOD_0"), "{body}");
    // `#r<p>`: the repartition tasks; `#<p>`: the aggregation tasks. They hash to slots 14, 2,
    // 14, 14 and 8, 15, 0, 14: both halves and both parities.
    let all: BTreeSet<String> =
        (0..4).flat_map(|p| [format!("CTAS_PER_MOD_0#r{p}"), format!("CTAS_PER_MOD_0#{p}")]).collect();
    let split = wait_until(WAIT, "the tasks split between the servers", || {
        let (ta, tc) = (placement_list(&a.http, "tasks"), placement_list(&cluster.http, "tasks"));
        let union: BTreeSet<String> = ta.union(&tc).cloned().collect();
        (ta.is_disjoint(&tc) && union == all && !ta.is_empty() && !tc.is_empty()).then_some((ta, tc))
    });
    eprintln!("tasks: {split:?}");
    let produce_all = |range: std::ops::Range<i64>| {
        for p in 0..4 {
            produce_range_to(&cluster.addr, "agg-src", p, &format!("p{p}-"), range.clone());
        }
    };
    // Per group m (keyed by its KAFKA-format BIGINT): 4 partitions × the n < `upto` with
    // n % 10 = m.
    let expected = |upto: i64| -> BTreeMap<String, Json> {
        (0..10)
            .map(|m| {
                let ns: Vec<i64> = (0..upto).filter(|n| n % 10 == m).collect();
                let key = String::from_utf8_lossy(&m.to_be_bytes()).into_owned();
                (key, json!({ "C": 4 * ns.len(), "S": 4 * ns.iter().sum::<i64>() }))
            })
            .collect()
    };
    let wait_for_counts = |upto: i64| {
        let want = expected(upto);
        wait_until(WAIT, &format!("the counts of the first {upto} records per partition"), || {
            (latest_values(&cluster.addr, "PER_MOD") == want).then_some(())
        });
    };
    produce_all(0..500);
    wait_for_counts(500);
    // The repartition topic has the input's partitions, the changelog one per aggregation task.
    for topic in ["_freshet_sql_CTAS_PER_MOD_0-repartition", "_freshet_sql_CTAS_PER_MOD_0-changelog"] {
        let partitions = runtime().block_on(async {
            let client = Client::connect(&cluster.addr).await.expect("connect");
            client.topic(topic).await.expect("the topic exists").partitions.len()
        });
        assert_eq!(partitions, 4, "{topic}");
    }

    a.kill();
    a.restart();
    produce_all(500..1000);
    wait_for_counts(1000);
    // Pull queries through either server answer from the table the tasks wrote together.
    for http in [&a.http, &cluster.http] {
        let (status, answer) = query(http, "SELECT m, c, s FROM per_mod WHERE m = 3;", json!({}));
        assert_eq!(status, 200, "{answer:?}");
        let s: i64 = (0..1000).filter(|n| n % 10 == 3).sum();
        assert_eq!(rows(&answer), [json!([3, 400, 4 * s])]);
    }
    // What the aggregation tasks committed past leaves the repartition topic
    // (`SQL_REPARTITION_PURGE_MS`).
    wait_until(WAIT, "the repartition topic purged", || {
        let starts: Vec<i64> = runtime().block_on(async {
            let client = Client::connect(&cluster.addr).await.expect("connect");
            let mut starts = vec![];
            for p in 0..4 {
                let topic = "_freshet_sql_CTAS_PER_MOD_0-repartition";
                starts.push(client.list_offset(topic, p, -2).await.expect("the earliest offset"));
            }
            starts
        });
        starts.iter().all(|&s| s > 0).then_some(())
    });

    assert!(a.stop().success());
    wait_until(WAIT, "the cluster to run every task", || (placement_list(&cluster.http, "tasks") == all).then_some(()));
    produce_all(1000..1500);
    wait_for_counts(1500);
}
