//! The SQL engine inside a real `freshet serve`: records produced with librdkafka, statements
//! sent to the ksqlDB-compatible REST API over HTTP, results consumed with librdkafka; the
//! statements survive a restart.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::rest::{get, ksql, names, query, rows};
use common::{wait_until, Server};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(30);

/// A `people` table, a `visits` stream and `named`, the visits joined with the people's names.
const PEOPLE_VISITS_NAMED: &str =
    "CREATE TABLE people (id STRING PRIMARY KEY, name STRING) WITH (KAFKA_TOPIC='people', VALUE_FORMAT='JSON');
     CREATE STREAM visits (vid STRING KEY, who STRING, n BIGINT) WITH (KAFKA_TOPIC='visits', VALUE_FORMAT='JSON');
     CREATE STREAM named AS SELECT v.who AS who, p.name AS name, v.n AS n FROM visits v JOIN people p ON v.who = p.id;";

fn base(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr).set("broker.address.family", "v4");
    c
}

fn create_topic(addr: &str, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = base(addr).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(WAIT)).request_timeout(Some(WAIT));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in rt.block_on(admin.create_topics([&topic], &opts)).expect("create_topics") {
        r.expect("topic created");
    }
}

/// An order: key, JSON value, timestamp.
fn order(id: i64, amount: f64, customer: &str) -> (String, String, i64) {
    let value = json!({ "ID": id, "AMOUNT": amount, "CUSTOMER": customer }).to_string();
    (format!("k{id}"), value, base_hour() + id * 1000)
}

fn produce(addr: &str, topic: &str, records: &[(String, String, i64)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = base(addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for (key, value, ts) in records {
        let headers = OwnedHeaders::new().insert(Header { key: "source", value: Some("test") });
        producer
            .send(BaseRecord::to(topic).key(key).payload(value).timestamp(*ts).headers(headers))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(WAIT).expect("flushed");
}

/// A consumed record: key, value, timestamp, headers.
type Consumed = (String, Json, i64, Vec<(String, Vec<u8>)>);

/// Reads every partition of `topic` from the start until `done` says enough (bounded).
fn consume_until(addr: &str, topic: &str, what: &str, done: impl Fn(&[Consumed]) -> bool) -> Vec<Consumed> {
    let consumer: BaseConsumer = base(addr)
        .set("group.id", "sql-rest-test")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let meta = wait_until(WAIT, "the output topic's metadata", || {
        let m = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let t = m.topics().first()?;
        (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..meta {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out: Vec<Consumed> = vec![];
    let deadline = Instant::now() + WAIT;
    while !done(&out) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; got {out:?}");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("consume");
        let key = String::from_utf8(m.key().expect("key").to_vec()).unwrap();
        let value: Json = serde_json::from_slice(m.payload().expect("value")).expect("JSON value");
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        out.push((key, value, m.timestamp().to_millis().expect("timestamp"), headers));
    }
    out
}

#[test]
fn ksql_rest_api_runs_persistent_queries_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    assert!(!server.http.is_empty(), "the server printed its HTTP address");

    // Server info and health, in ksqlDB's shapes.
    let (status, info) = get(&server.http, "/info");
    assert_eq!(status, 200);
    let info = &info["KsqlServerInfo"];
    assert!(info["version"].is_string() && info["ksqlServiceId"].is_string(), "{info}");
    assert!(!info["kafkaClusterId"].as_str().unwrap().is_empty());
    assert_eq!(info["serverStatus"], "RUNNING");
    let (status, health) = get(&server.http, "/healthcheck");
    assert_eq!(status, 200);
    assert_eq!(health["isHealthy"], true, "{health}");
    assert_eq!(health["details"]["commandRunner"]["isHealthy"], true);

    // Input produced by librdkafka before the statements exist.
    create_topic(&server.addr, "orders", 2);
    let first: Vec<_> = [(1, 50.0, "ann"), (2, 150.5, "bob"), (3, 99.0, "cy"), (4, 1000.0, "dee"), (5, 101.0, "ed")]
        .into_iter()
        .map(|(i, a, c)| order(i, a, c))
        .collect();
    produce(&server.addr, "orders", &first);

    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM orders (order_key STRING KEY, id BIGINT, amount DOUBLE, customer STRING, src BYTES HEADER('source'))
             WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON');
         CREATE STREAM big AS SELECT order_key, id, amount, customer, src FROM orders WHERE amount > 100;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let entities = body.as_array().unwrap();
    assert_eq!(entities.len(), 2, "{body}");
    assert_eq!(entities[0]["@type"], "currentStatus");
    assert_eq!(entities[0]["commandId"], "stream/`ORDERS`/create");
    assert_eq!(entities[0]["commandStatus"]["status"], "SUCCESS");
    assert!(entities[0]["commandSequenceNumber"].as_i64().unwrap() >= 0);
    assert!(entities[0]["statementText"].as_str().unwrap().starts_with("CREATE STREAM orders"));
    let query_id = entities[1]["commandStatus"]["queryId"].as_str().expect("a query id").to_string();
    assert!(query_id.starts_with("CSAS_BIG"), "{query_id}");
    assert_eq!(entities[1]["commandStatus"]["message"], format!("Created query with ID {query_id}"));

    // The output, read by librdkafka: filtered rows, keys and timestamps kept.
    let out = consume_until(&server.addr, "BIG", "the filtered orders", |o| o.len() >= 3);
    let mut got: BTreeMap<String, (Json, i64)> = BTreeMap::new();
    for (k, v, ts, _) in &out {
        got.insert(k.clone(), (v.clone(), *ts));
    }
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["k2", "k4", "k5"], "{out:?}");
    // SRC: the producer's header, read by the engine (BYTES are base64 in JSON).
    assert_eq!(got["k2"].0, json!({ "ID": 2, "AMOUNT": 150.5, "CUSTOMER": "bob", "SRC": "dGVzdA==" }));
    assert_eq!(got["k4"].1, base_hour() + 4_000);
    assert_eq!(out.len(), 3, "no duplicates: {out:?}");

    // Listings.
    let (status, body) = ksql(&server.http, "SHOW STREAMS; SHOW QUERIES; DESCRIBE big; SHOW TOPICS;", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["@type"], "streams");
    assert_eq!(names(&body[0], "streams"), ["BIG", "ORDERS"]);
    assert_eq!(body[0]["streams"][1]["valueFormat"], "JSON");
    assert_eq!(body[0]["streams"][1]["topic"], "orders");
    assert_eq!(body[1]["@type"], "queries");
    assert_eq!(body[1]["queries"][0]["id"], query_id.as_str());
    assert_eq!(body[1]["queries"][0]["sinkKafkaTopics"][0], "BIG");
    assert_eq!(body[2]["@type"], "sourceDescription");
    let d = &body[2]["sourceDescription"];
    assert_eq!(d["name"], "BIG");
    assert_eq!(
        d["fields"][0],
        json!({ "name": "ORDER_KEY", "schema": { "type": "STRING", "fields": null, "memberSchema": null }, "type": "KEY" })
    );
    assert_eq!(d["writeQueries"][0]["id"], query_id.as_str());
    assert_eq!(body[3]["@type"], "kafka_topics");
    let topics = names(&body[3], "topics");
    assert!(topics.contains(&"orders".to_string()) && topics.contains(&"BIG".to_string()), "{topics:?}");
    assert!(!topics.iter().any(|t| t.starts_with('_')), "internal topics are hidden: {topics:?}");

    // A bad statement: HTTP 400, ksqlDB's error shape, the message positioned.
    let (status, err) =
        ksql(&server.http, "CREATE STREAM oops (id INT) WITH (KAFKA_TOPIC='orders' VALUE_FORMAT='JSON');", json!({}));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["@type"], "statement_error");
    assert_eq!(err["error_code"], 40001);
    assert!(err["message"].as_str().unwrap().starts_with("line 1:"), "{err}");
    assert!(err["statementText"].as_str().unwrap().contains("oops"));
    // A statement error after a good one: the earlier entity is reported with the error.
    let (status, err) = ksql(&server.http, "SHOW STREAMS; DROP STREAM nosuch;", json!({}));
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("NOSUCH"), "{err}");
    assert_eq!(err["entities"][0]["@type"], "streams");
    // A request that is not JSON.
    let r = ureq::post(&format!("http://{}/ksql", server.http)).timeout(WAIT).send_string("SHOW STREAMS;");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));

    // Restart: the streams and the query come back from the command topic.
    assert!(server.stop().success());
    server.restart();
    let (status, body) = ksql(&server.http, "SHOW STREAMS; SHOW QUERIES;", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body[0], "streams"), ["BIG", "ORDERS"]);
    assert_eq!(body[1]["queries"][0]["id"], query_id.as_str());

    // ... and the query processes new input.
    produce(&server.addr, "orders", &[order(6, 600.0, "fay"), order(7, 7.0, "gus")]);
    let out = consume_until(&server.addr, "BIG", "the order produced after the restart", |o| {
        o.iter().any(|(k, _, _, _)| k == "k6")
    });
    let (_, v, ts, _) = out.iter().find(|(k, _, _, _)| k == "k6").unwrap();
    assert_eq!(v, &json!({ "ID": 6, "AMOUNT": 600.0, "CUSTOMER": "fay", "SRC": "dGVzdA==" }));
    assert_eq!(*ts, base_hour() + 6_000);
    assert!(!out.iter().any(|(k, _, _, _)| k == "k7" || k == "k1"), "{out:?}");
}

#[test]
fn new_queries_start_at_the_end_by_default_and_insert_values_reaches_kafka_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM clicks (user_id STRING KEY, page STRING) WITH (KAFKA_TOPIC='clicks', PARTITIONS=1, VALUE_FORMAT='JSON');
         INSERT INTO clicks (user_id, page) VALUES ('u1', 'old');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1, "INSERT VALUES answers with no entity: {body}");
    // Without auto.offset.reset=earliest a new query starts at the end of its input (ksqlDB's
    // default), so only what comes after it is processed.
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM pages AS SELECT user_id, UCASE(page) AS page FROM clicks;
         INSERT INTO clicks (user_id, page) VALUES ('u2', 'new');",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let out = consume_until(&server.addr, "PAGES", "the new click", |o| !o.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(out[0].0, "u2");
    assert_eq!(out[0].1, json!({ "PAGE": "NEW" }));
    // The engine's own records read by librdkafka from the input topic too.
    let input = consume_until(&server.addr, "clicks", "the inserted clicks", |o| o.len() >= 2);
    assert_eq!(input.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["u1", "u2"]);
    assert_eq!(input[0].1, json!({ "PAGE": "old" }));
}

/// The start of the hour two hours ago: recent enough for the topics' retention.
fn base_hour() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        now / 3_600_000 * 3_600_000 - 2 * 3_600_000
    })
}

fn customer(id: &str, name: &str, city: &str) -> (String, String, i64) {
    (id.to_string(), json!({ "NAME": name, "CITY": city }).to_string(), base_hour())
}

fn city_order(id: i64, customer: &str, amount: f64) -> (String, String, i64) {
    // Orders one minute apart, all in the same hour.
    let value = json!({ "ID": id, "CUSTOMER": customer, "AMOUNT": amount }).to_string();
    (format!("o{id}"), value, base_hour() + id * 60_000)
}

/// The acceptance scenario of streaming SQL: orders and customers produced by librdkafka, a
/// CTAS over a join and a windowed aggregate, pull queries answering the current state, a push
/// query streaming changes, and the tables intact after SIGKILL and restart.
#[test]
fn join_and_windowed_aggregate_answer_pull_and_push_queries_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_topic(&server.addr, "customers", 1);
    create_topic(&server.addr, "orders", 2);
    produce(
        &server.addr,
        "customers",
        &[customer("c1", "Ann", "Paris"), customer("c2", "Bob", "Oslo"), customer("c3", "Cy", "Paris")],
    );
    produce(&server.addr, "orders", &[city_order(1, "c1", 10.0), city_order(2, "c2", 5.0), city_order(3, "c3", 2.5)]);

    let (status, body) = ksql(
        &server.http,
        "CREATE TABLE customers (id STRING PRIMARY KEY, name STRING, city STRING)
             WITH (KAFKA_TOPIC='customers', VALUE_FORMAT='JSON');
         CREATE STREAM orders (order_key STRING KEY, id BIGINT, customer STRING, amount DOUBLE)
             WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON');
         CREATE STREAM enriched AS SELECT o.customer AS customer, o.id AS id, o.amount AS amount, c.name AS name, c.city AS city
             FROM orders o JOIN customers c ON o.customer = c.id;
         CREATE TABLE city_totals AS SELECT city, COUNT(*) AS orders, SUM(amount) AS total FROM enriched GROUP BY city;
         CREATE TABLE city_hourly AS SELECT city, COUNT(*) AS orders FROM enriched
             WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY city;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");

    // Pull queries: the current state, by key and by scan.
    let paris = || {
        wait_until(WAIT, "Paris's totals", || {
            let (status, answer) = query(&server.http, "SELECT * FROM city_totals WHERE city = 'Paris';", json!({}));
            assert_eq!(status, 200, "{answer:?}");
            let r = rows(&answer);
            (r.len() == 1 && r[0][1] == json!(2)).then_some(answer)
        })
    };
    let answer = paris();
    assert_eq!(answer[0]["header"]["schema"], "`CITY` STRING KEY, `ORDERS` BIGINT, `TOTAL` DOUBLE");
    assert_eq!(rows(&answer), [json!(["Paris", 2, 12.5])]);
    let (_, all) = query(&server.http, "SELECT city, total FROM city_totals;", json!({}));
    assert_eq!(rows(&all), [json!(["Oslo", 5.0]), json!(["Paris", 12.5])]);
    let hour = base_hour();
    let (_, windowed) = query(
        &server.http,
        "SELECT city, WINDOWSTART, WINDOWEND, orders FROM city_hourly WHERE city = 'Paris';",
        json!({}),
    );
    assert_eq!(rows(&windowed), [json!(["Paris", hour, hour + 3_600_000, 2])]);
    // A table without a query behind it cannot answer pull queries; the error says what to do.
    let (status, err) = query(&server.http, "SELECT * FROM customers;", json!({}));
    assert_eq!(status, 400);
    assert!(err[0]["message"].as_str().unwrap().contains("isn't queryable"), "{err:?}");

    // A push query streams the changes made after it started, then ends at its LIMIT.
    let http = server.http.clone();
    let push = std::thread::spawn(move || {
        query(&http, "SELECT city, orders, total FROM city_totals EMIT CHANGES LIMIT 2;", json!({}))
    });
    std::thread::sleep(Duration::from_millis(500));
    produce(&server.addr, "orders", &[city_order(4, "c2", 1.0), city_order(5, "c1", 4.0)]);
    let (status, pushed) = push.join().expect("push query thread");
    assert_eq!(status, 200, "{pushed:?}");
    assert_eq!(pushed[0]["header"]["schema"], "`CITY` STRING, `ORDERS` BIGINT, `TOTAL` DOUBLE");
    assert_eq!(rows(&pushed), [json!(["Oslo", 2, 6.0]), json!(["Paris", 3, 16.5])]);
    assert_eq!(pushed.last().unwrap()["finalMessage"], "Limit Reached");

    // SIGKILL and restart: the statements come back and the tables answer the same.
    server.kill();
    server.restart();
    let (_, all) = wait_until(WAIT, "the tables after the restart", || {
        let (status, answer) = query(&server.http, "SELECT * FROM city_totals;", json!({}));
        (status == 200 && rows(&answer).len() == 2).then_some((status, answer))
    });
    assert_eq!(rows(&all), [json!(["Oslo", 2, 6.0]), json!(["Paris", 3, 16.5])]);
    // New input after the restart counts once.
    produce(&server.addr, "orders", &[city_order(6, "c3", 0.5)]);
    let answer = wait_until(WAIT, "the order produced after the restart", || {
        let (_, answer) = query(&server.http, "SELECT * FROM city_totals WHERE city = 'Paris';", json!({}));
        (rows(&answer).first().is_some_and(|r| r[1] == json!(4))).then_some(answer)
    });
    assert_eq!(rows(&answer), [json!(["Paris", 4, 17.0])]);
    let (_, windowed) = query(&server.http, "SELECT city, orders FROM city_hourly;", json!({}));
    assert_eq!(rows(&windowed), [json!(["Oslo", 2]), json!(["Paris", 4])]);

    // A record that is not JSON goes to the processing log with the reason; the queries go on.
    produce(&server.addr, "orders", &[("o7".into(), "not json".into(), base_hour() + 7 * 60_000)]);
    produce(&server.addr, "orders", &[city_order(8, "c2", 2.0)]);
    let log = consume_until(&server.addr, "default_ksql_processing_log", "the processing log", |l| !l.is_empty());
    let message = &log[0].1["message"];
    assert!(message["errorMessage"].as_str().unwrap().contains("orders"), "{log:?}");
    assert!(log[0].1["logger"].as_str().unwrap().starts_with("processing.CSAS_ENRICHED"), "{log:?}");
    wait_until(WAIT, "the order after the bad record", || {
        let (_, answer) = query(&server.http, "SELECT orders FROM city_totals WHERE city = 'Oslo';", json!({}));
        (rows(&answer) == [json!([3])]).then_some(())
    });
}

/// Exactly-once across SIGKILL: a query killed while it works through a backlog resumes, and
/// every input record's output is there once (read by a `read_committed` consumer and by a pull
/// query over the output stream), none lost, none doubled.
#[test]
fn a_query_killed_mid_stream_writes_every_output_exactly_once() {
    const N: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_topic(&server.addr, "events", 2);
    let records: Vec<_> =
        (0..N).map(|i| (format!("e{i}"), json!({ "N": i }).to_string(), base_hour() + i as i64)).collect();
    produce(&server.addr, "events", &records);
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM events (id STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');
         CREATE STREAM doubled AS SELECT id, n * 2 AS d FROM events;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    // Killed while the backlog is being processed (about 50 steps, each a transaction; the check
    // holds wherever the kill lands).
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    server.restart();
    let out = consume_until(&server.addr, "DOUBLED", "every output", |o| o.len() >= N);
    let (_, answer) = wait_until(WAIT, "the output stream complete", || {
        let (status, answer) = query(&server.http, "SELECT * FROM doubled;", json!({}));
        (status == 200 && rows(&answer).len() >= N).then_some((status, answer))
    });
    let pulled = rows(&answer);
    assert_eq!(pulled.len(), N, "no output twice");
    assert_eq!(out.len(), N, "no output twice (read_committed consumer)");
    let keys: std::collections::BTreeSet<&str> = out.iter().map(|(k, _, _, _)| k.as_str()).collect();
    assert_eq!(keys.len(), N, "every input's output, once");
    for (k, v, _, _) in &out {
        let n: i64 = k[1..].parse().unwrap();
        assert_eq!(v["D"], json!(n * 2), "{k}");
    }
}

/// The high watermark of partition 0 of a topic.
fn high_watermark(addr: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = base(addr).set("group.id", "sql-rest-watermarks").create().expect("consumer");
    consumer.fetch_watermarks(topic, 0, WAIT).expect("watermarks").1
}

/// Exactly-once is the default: a step's outputs come with a transaction marker. A query made
/// with `processing.guarantee=at_least_once` writes plain records, also after a restart.
#[test]
fn processing_guarantee_is_exactly_once_by_default_and_at_least_once_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let earliest = json!({ "ksql.streams.auto.offset.reset": "earliest" });
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM s (k STRING KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1, VALUE_FORMAT='JSON');
         INSERT INTO s (k, v) VALUES ('a', 1);
         CREATE STREAM eo AS SELECT * FROM s;",
        earliest.clone(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM alo AS SELECT * FROM s;",
        json!({ "ksql.streams.auto.offset.reset": "earliest", "processing.guarantee": "at_least_once" }),
    );
    assert_eq!(status, 200, "{body}");
    consume_until(&server.addr, "EO", "the exactly-once output", |o| o.len() == 1);
    consume_until(&server.addr, "ALO", "the at-least-once output", |o| o.len() == 1);
    // One record each; the exactly-once one is followed by its commit marker.
    assert_eq!(high_watermark(&server.addr, "ALO"), 1);
    assert_eq!(high_watermark(&server.addr, "EO"), 2);

    server.kill();
    server.restart();
    let (status, body) = ksql(&server.http, "INSERT INTO s (k, v) VALUES ('b', 2);", json!({}));
    assert_eq!(status, 200, "{body}");
    consume_until(&server.addr, "EO", "the exactly-once output after the restart", |o| o.len() == 2);
    consume_until(&server.addr, "ALO", "the at-least-once output after the restart", |o| o.len() == 2);
    assert_eq!(high_watermark(&server.addr, "ALO"), 2);
    assert_eq!(high_watermark(&server.addr, "EO"), 4);
}

/// Deletes every record of partition 0 of `topic` (DeleteRecords up to the high watermark).
fn delete_all_records(addr: &str, topic: &str) {
    let end = high_watermark(addr, topic);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = base(addr).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(WAIT)).request_timeout(Some(WAIT));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(end)).unwrap();
    rt.block_on(admin.delete_records(&tpl, &opts)).expect("records deleted");
}

/// State comes back from the state store and its changelog, not by reading the input again:
/// the inputs are emptied (DeleteRecords) before the SIGKILL, yet after the restart an
/// aggregate, a session window and a stream-stream join's buffers go on from where they were,
/// and the outputs written before the kill are not written again.
#[test]
fn query_state_is_restored_after_sigkill_without_reading_the_input_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_topic(&server.addr, "clicks", 1);
    create_topic(&server.addr, "views", 1);
    let t0 = base_hour();
    let click = |user: &str, page: &str, minute: i64| {
        (user.to_string(), json!({ "USER": user, "PAGE": page }).to_string(), t0 + minute * 60_000)
    };
    produce(&server.addr, "clicks", &[click("u1", "a", 0), click("u1", "b", 1), click("u2", "c", 0)]);
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM clicks (user STRING KEY, page STRING) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');
         CREATE STREAM views (user STRING KEY, page STRING) WITH (KAFKA_TOPIC='views', VALUE_FORMAT='JSON');
         CREATE TABLE per_user AS SELECT user, COUNT(*) AS n FROM clicks GROUP BY user;
         CREATE TABLE user_sessions AS SELECT user, COUNT(*) AS n FROM clicks
             WINDOW SESSION (10 MINUTES) GROUP BY user;
         CREATE STREAM click_views AS SELECT c.user AS user, c.page AS clicked, v.page AS viewed
             FROM clicks c JOIN views v WITHIN 1 HOUR ON c.user = v.user;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(WAIT, "the counts before the kill", || {
        let (_, answer) = query(&server.http, "SELECT user, n FROM per_user;", json!({}));
        (rows(&answer) == [json!(["u1", 2]), json!(["u2", 1])]).then_some(())
    });
    let outputs_before = consume_until(&server.addr, "PER_USER", "the table's changes", |o| o.len() == 3).len();
    // The state files and changelog topics exist.
    let redb_files = |d: std::path::PathBuf| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "redb"))
            .count()
    };
    assert_eq!(redb_files(dir.path().join("sql-state")), 3, "one store file per query");
    assert_eq!(redb_files(dir.path().join("sql-state/tables")), 1, "a store file for the table pull queries read");

    // Without its input, a query restarted from scratch would count from zero.
    delete_all_records(&server.addr, "clicks");
    server.kill();
    server.restart();
    produce(&server.addr, "clicks", &[click("u1", "d", 2)]);
    produce(&server.addr, "views", &[click("u1", "home", 3)]);
    wait_until(WAIT, "u1's count going on from 2", || {
        let (_, answer) = query(&server.http, "SELECT user, n FROM per_user WHERE user = 'u1';", json!({}));
        (rows(&answer) == [json!(["u1", 3])]).then_some(())
    });
    let (_, answer) = query(&server.http, "SELECT user, n FROM per_user WHERE user = 'u2';", json!({}));
    assert_eq!(rows(&answer), [json!(["u2", 1])]);
    // The new click merged into u1's restored session, which starts at the first click.
    let session = wait_until(WAIT, "u1's session", || {
        let (_, answer) =
            query(&server.http, "SELECT user, WINDOWSTART, n FROM user_sessions WHERE user = 'u1';", json!({}));
        let r = rows(&answer);
        (r.len() == 1 && r[0][2] == json!(3)).then_some(r)
    });
    assert_eq!(session, [json!(["u1", t0, 3])]);
    // The view joins the three clicks of the last hour, two of them restored from the buffer.
    let joined = consume_until(&server.addr, "CLICK_VIEWS", "the joined clicks", |o| o.len() >= 3);
    let mut clicked: Vec<&str> = joined.iter().map(|(_, v, _, _)| v["CLICKED"].as_str().unwrap()).collect();
    clicked.sort();
    assert_eq!(clicked, ["a", "b", "d"]);
    // One more change of PER_USER, none written again.
    std::thread::sleep(Duration::from_millis(300));
    let outputs_after = consume_until(&server.addr, "PER_USER", "the table's changes", |o| o.len() > outputs_before);
    assert_eq!(outputs_after.len(), outputs_before + 1, "{outputs_after:?}");
}

/// A step's outputs larger than a record batch may be (max.message.bytes, about 1 MiB) are
/// written in several batches, in order, in the step's transaction.
#[test]
fn large_step_outputs_are_split_into_batches_the_topic_accepts() {
    const N: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_topic(&server.addr, "big", 1);
    let pad = "x".repeat(1_500);
    let records: Vec<_> =
        (0..N).map(|i| (format!("k{i}"), json!({ "N": i, "PAD": pad }).to_string(), base_hour() + i as i64)).collect();
    produce(&server.addr, "big", &records);
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM big (id STRING KEY, n BIGINT, pad STRING) WITH (KAFKA_TOPIC='big', VALUE_FORMAT='JSON');
         CREATE STREAM big_copy AS SELECT id, n, pad FROM big;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let out = consume_until(&server.addr, "BIG_COPY", "every copy", |o| o.len() >= N);
    assert_eq!(out.len(), N);
    for (i, (k, v, _, _)) in out.iter().enumerate() {
        assert_eq!(k, &format!("k{i}"), "in order");
        assert_eq!(v["N"], json!(i));
    }
    let (_, queries) = ksql(&server.http, "SHOW QUERIES;", json!({}));
    assert_eq!(queries[0]["queries"][0]["state"], "RUNNING", "{queries}");
}

fn delete_topic(addr: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = base(addr).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(WAIT)).request_timeout(Some(WAIT));
    for r in rt.block_on(admin.delete_topics(&[name], &opts)).expect("delete_topics") {
        r.expect("topic deleted");
    }
}

/// The state SHOW QUERIES gives query `id` (RUNNING, ERROR), if it lists it.
fn query_state(http: &str, id: &str) -> Option<String> {
    let (_, body) = ksql(http, "SHOW QUERIES;", json!({}));
    body[0]["queries"].as_array()?.iter().find(|q| q["id"] == id).map(|q| q["state"].as_str().unwrap().to_string())
}

/// A query whose step fails (its output topic was deleted under it, so the write is refused)
/// shows ERROR, and starts again by itself once the write can succeed: from its progress, so
/// the record that failed is written then, once.
#[test]
fn a_failed_query_starts_again_after_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, body) = ksql(
        &server.http,
        "CREATE STREAM retry_src (k STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='retry-src', PARTITIONS=1, VALUE_FORMAT='JSON');
         CREATE STREAM retry_out AS SELECT k, n FROM retry_src;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let id = body[1]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let insert = |n: i64| {
        let (status, body) =
            ksql(&server.http, &format!("INSERT INTO retry_src (k, n) VALUES ('k{n}', {n});"), json!({}));
        assert_eq!(status, 200, "{body}");
    };
    insert(1);
    consume_until(&server.addr, "RETRY_OUT", "the first output", |r| r.len() == 1);

    delete_topic(&server.addr, "RETRY_OUT");
    insert(2);
    wait_until(WAIT, "the query to fail", || {
        (query_state(&server.http, &id).as_deref() == Some("ERROR")).then_some(())
    });
    create_topic(&server.addr, "RETRY_OUT", 1);
    wait_until(WAIT, "the query to run again", || {
        (query_state(&server.http, &id).as_deref() == Some("RUNNING")).then_some(())
    });
    insert(3);
    // Read on for a second after both came, so a record written twice would show.
    let started = Instant::now();
    let out = consume_until(&server.addr, "RETRY_OUT", "the outputs after the failure", |r| {
        r.len() >= 2 && started.elapsed() > Duration::from_secs(1)
    });
    let keys: Vec<&str> = out.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys, ["k2", "k3"], "the failed record once, then the next");
}

/// A join of a stream and a table of several partitions runs as tasks: a repartition task per
/// partition of each input sends each record by the hash of its join key, and one task per
/// partition owns the table rows and joins the stream records of its keys. Killed while the
/// backlog is processed, it still writes each joined record exactly once.
#[test]
fn a_split_join_killed_mid_stream_writes_every_output_exactly_once() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_topic(&server.addr, "visits", 3);
    create_topic(&server.addr, "people", 3);
    let people: Vec<_> =
        (0..50).map(|i| (format!("u{i}"), json!({ "NAME": format!("n{i}") }).to_string(), base_hour())).collect();
    produce(&server.addr, "people", &people);
    let visits: Vec<_> = (0..N)
        .map(|i| {
            (format!("v{i}"), json!({ "WHO": format!("u{}", i % 50), "N": i }).to_string(), base_hour() + 1 + i as i64)
        })
        .collect();
    produce(&server.addr, "visits", &visits);
    let (status, body) = ksql(
        &server.http,
        &format!("{PEOPLE_VISITS_NAMED}
         CREATE TABLE per_person AS SELECT p.id AS id, COUNT(*) AS visits FROM visits v JOIN people p ON v.who = p.id GROUP BY p.id;
         CREATE TABLE per_bucket AS SELECT v.n % 10 AS bucket, COUNT(*) AS visits FROM visits v JOIN people p ON v.who = p.id GROUP BY v.n % 10;"),
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let id = body[2]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let counting = body[3]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let bucketing = body[4]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    // Killed while the backlog is being processed (the check holds wherever the kill lands).
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    server.restart();
    // Repartition tasks for both inputs (`#r<p>`, `#r1-<p>`), then the owning tasks (`#<p>`).
    let tasks = placed_tasks(&server.http);
    // The join aggregated by its join key splits the same way.
    let names = ["#0", "#1", "#2", "#r0", "#r1", "#r1-0", "#r1-1", "#r1-2", "#r2"];
    let mut expected: std::collections::BTreeSet<String> =
        [&id, &counting, &bucketing].iter().flat_map(|q| names.iter().map(move |t| format!("{q}{t}"))).collect();
    // Aggregated by another column: join tasks, then the aggregating tasks.
    expected.extend(["#j0", "#j1", "#j2"].iter().map(|t| format!("{bucketing}{t}")));
    assert_eq!(tasks, expected);
    let out = consume_until(&server.addr, "NAMED", "every visit joined", |o| o.len() >= N);
    // Everything the stream holds (a consumer stops as soon as it has N), once its tasks idle.
    wait_until(WAIT, "the joined stream complete", || {
        let (status, answer) = query(&server.http, "SELECT * FROM named;", json!({}));
        (status == 200 && rows(&answer).len() >= N).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (_, answer) = query(&server.http, "SELECT * FROM named;", json!({}));
    assert_eq!(rows(&answer).len(), N, "no output twice (pull query over the whole stream)");
    assert_eq!(out.len(), N, "no output twice");
    let ns: std::collections::BTreeSet<i64> = out.iter().map(|(_, v, _, _)| v["N"].as_i64().unwrap()).collect();
    assert_eq!(ns.len(), N, "every visit's output, once");
    for (k, v, _, _) in &out {
        let n = v["N"].as_i64().unwrap();
        assert_eq!(k, &format!("u{}", n % 50));
        assert_eq!(v["NAME"], json!(format!("n{}", n % 50)), "{k}");
    }
    // Every person's visits counted once (none twice: the count stays there), and every
    // bucket's.
    for (table, groups) in [("per_person", 50), ("per_bucket", 10)] {
        let counted = |counts: &[Json]| counts.len() == groups && counts.iter().all(|r| r[1] == json!(N / groups));
        settled_rows(&server.http, &format!("SELECT * FROM {table};"), table, counted);
    }
}

/// Waits until the rows of pull query `sql` satisfy `done`, then checks that they still do
/// a moment later (nothing counted twice arrives after).
fn settled_rows(http: &str, sql: &str, what: &str, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
    let read = || {
        let (status, answer) = query(http, sql, json!({}));
        assert_eq!(status, 200, "{answer:?}");
        rows(&answer)
    };
    wait_until(WAIT, what, || done(&read()).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    let settled = read();
    assert!(done(&settled), "{what}: {settled:?}");
    settled
}

/// A table regrouped by a value column, split into tasks: each key's row moves between
/// regions (and the tasks that own them) and leaves its region when WHERE rejects it; the
/// repartition tasks remember where each key's row went (their own state and changelog) to
/// take it back from there. Killed mid-stream and restarted, the totals are exact.
#[test]
fn a_split_regrouped_table_killed_mid_stream_keeps_exact_totals() {
    const N: usize = 20_000;
    const ACCOUNTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_topic(&server.addr, "accounts", 3);
    let mut last: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    // Each account's region changes with every update of it; every 11th sets a negative balance.
    let updates = |last: &mut std::collections::BTreeMap<String, (String, i64)>, from: usize, to: usize| {
        (from..to)
            .map(|i| {
                let (account, region) = (format!("a{}", i % ACCOUNTS), format!("r{}", (i * 7 / ACCOUNTS) % 5));
                let balance = if i % 11 == 3 { -1 } else { (i % 100) as i64 };
                last.insert(account.clone(), (region.clone(), balance));
                (account, json!({ "REGION": region, "BALANCE": balance }).to_string(), base_hour() + i as i64)
            })
            .collect::<Vec<_>>()
    };
    produce(&server.addr, "accounts", &updates(&mut last, 0, N));
    let (status, body) = ksql(
        &server.http,
        "CREATE TABLE accounts (id STRING PRIMARY KEY, region STRING, balance BIGINT) WITH (KAFKA_TOPIC='accounts', VALUE_FORMAT='JSON');
         CREATE TABLE per_region AS SELECT region, COUNT(*) AS n, SUM(balance) AS total FROM accounts WHERE balance >= 0 GROUP BY region;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let id = body[1]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let totals = |last: &std::collections::BTreeMap<String, (String, i64)>| {
        let mut totals: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for (region, balance) in last.values().filter(|(_, b)| *b >= 0) {
            let t = totals.entry(region.clone()).or_default();
            t.0 += 1;
            t.1 += balance;
        }
        totals
    };
    let answer = |http: &str| {
        let (status, answer) = query(http, "SELECT * FROM per_region;", json!({}));
        assert_eq!(status, 200, "{answer:?}");
        let mut got: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for row in rows(&answer) {
            let total = row[2].as_i64().unwrap_or(0);
            got.insert(row[0].as_str().unwrap().to_string(), (row[1].as_i64().unwrap(), total));
        }
        got.retain(|_, (n, _)| *n > 0);
        got
    };
    let expected = totals(&last);
    wait_until(WAIT, "the totals of the first rows", || (answer(&server.http) == expected).then_some(()));
    // Killed once every row is in place: the rows that move next must be taken back from
    // where the repartition tasks' restored state says they went.
    server.kill();
    server.restart();
    let tasks = placed_tasks(&server.http);
    let names: std::collections::BTreeSet<String> =
        ["#0", "#1", "#2", "#r0", "#r1", "#r2"].iter().map(|t| format!("{id}{t}")).collect();
    assert_eq!(tasks, names);
    // One move per account: a task that held a row and gets nothing of that key again keeps
    // counting it unless the tombstone from the restored route reaches it.
    produce(&server.addr, "accounts", &updates(&mut last, N, N + ACCOUNTS));
    let expected = totals(&last);
    wait_until(WAIT, "the totals after one move each", || (answer(&server.http) == expected).then_some(()));
    produce(&server.addr, "accounts", &updates(&mut last, N + ACCOUNTS, 2 * N));
    // Killed again while the moves are processed (the check holds wherever the kill lands).
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    server.restart();
    let expected = totals(&last);
    wait_until(WAIT, "the totals of the last rows", || (answer(&server.http) == expected).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(answer(&server.http), expected, "nothing counted twice or left behind");

    // Each task has its store file and its changelog partition; dropping the table takes
    // them all away with the repartition topic.
    let state_files = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.path().join("sql-state"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{id}#")))
            .collect()
    };
    let files: std::collections::BTreeSet<String> = names.iter().map(|t| format!("{t}.redb")).collect();
    assert_eq!(state_files(), files);
    let internal = || -> std::collections::BTreeMap<String, usize> {
        let consumer: BaseConsumer = base(&server.addr).create().expect("consumer");
        let m = consumer.fetch_metadata(None, Duration::from_secs(5)).expect("metadata");
        let prefix = format!("_freshet_sql_{id}-");
        m.topics()
            .iter()
            .filter(|t| t.name().starts_with(&prefix))
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()
    };
    let topics: Vec<(String, usize)> = ["changelog", "repartition", "repartition-changelog"]
        .iter()
        .map(|t| (format!("_freshet_sql_{id}-{t}"), 3))
        .collect();
    assert_eq!(internal(), topics.into_iter().collect());
    let (status, body) = ksql(&server.http, "DROP TABLE per_region DELETE TOPIC;", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_files(), Default::default());
    assert_eq!(internal(), Default::default());
}

/// A join of three inputs on one key splits: a repartition task per partition of each input
/// (`#r<p>`, `#r1-<p>`, `#r2-<p>`) and one task per partition joining all three.
#[test]
fn a_three_way_join_on_one_key_runs_as_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for topic in ["calls", "lines", "plans"] {
        create_topic(&server.addr, topic, 2);
    }
    let lines: Vec<_> =
        (0..10).map(|i| (format!("l{i}"), json!({ "OWNER": format!("o{i}") }).to_string(), base_hour())).collect();
    produce(&server.addr, "lines", &lines);
    let plans: Vec<_> = (0..10)
        .filter(|i| i % 2 == 0)
        .map(|i| (format!("l{i}"), json!({ "PLAN": format!("p{i}") }).to_string(), base_hour()))
        .collect();
    produce(&server.addr, "plans", &plans);
    produce_calls(&server.addr, 300, 12);
    let (status, body) = ksql(
        &server.http,
        "CREATE TABLE lines (id STRING PRIMARY KEY, owner STRING) WITH (KAFKA_TOPIC='lines', VALUE_FORMAT='JSON');
         CREATE TABLE plans (id STRING PRIMARY KEY, plan STRING) WITH (KAFKA_TOPIC='plans', VALUE_FORMAT='JSON');
         CREATE STREAM calls (cid STRING KEY, line STRING) WITH (KAFKA_TOPIC='calls', VALUE_FORMAT='JSON');
         CREATE STREAM billed AS SELECT l.id AS line, c.cid AS cid, l.owner AS owner, p.plan AS plan
             FROM calls c JOIN lines l ON c.line = l.id LEFT JOIN plans p ON l.id = p.id;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let id = body[3]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let tasks = placed_tasks(&server.http);
    let expected: std::collections::BTreeSet<String> =
        ["#0", "#1", "#r0", "#r1", "#r1-0", "#r1-1", "#r2-0", "#r2-1"].iter().map(|t| format!("{id}{t}")).collect();
    assert_eq!(tasks, expected);
    // Calls on l0..l9 join (l10, l11 have no line); even lines have a plan.
    let joined = (0..300).filter(|i| i % 12 < 10).count();
    let out = consume_until(&server.addr, "BILLED", "every call billed", |o| o.len() >= joined);
    std::thread::sleep(Duration::from_millis(300));
    let (_, answer) = query(&server.http, "SELECT * FROM billed;", json!({}));
    assert_eq!(rows(&answer).len(), joined, "each call once");
    for (line, v, _, _) in &out {
        let n: usize = line[1..].parse().unwrap();
        assert_eq!(v["OWNER"], json!(format!("o{n}")), "{line}");
        let plan = if n.is_multiple_of(2) { json!(format!("p{n}")) } else { Json::Null };
        assert_eq!(v["PLAN"], plan, "{line}");
    }
}

/// A stream-table join over a backlog larger than a read batch: the table's rows are older
/// than the stream's records. Whole, a step ends when the table's partition runs out of what
/// was read of it; split, the owning tasks also wait while the table's repartition tasks have
/// rows to send (Kafka Streams' task idling): every record joins the row it would if all
/// were read in time order.
#[test]
fn a_join_over_a_backlog_joins_every_record_with_the_older_table_rows() {
    // One partition: the query runs whole; two: split.
    for partitions in [1, 2] {
        join_over_a_backlog(partitions);
    }
}

fn join_over_a_backlog(partitions: i32) {
    const PEOPLE: usize = 100_000;
    const VISITS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_topic(&server.addr, "visits", partitions);
    create_topic(&server.addr, "people", partitions);
    let people: Vec<_> = (0..PEOPLE)
        .map(|i| (format!("u{i}"), json!({ "NAME": format!("n{i}") }).to_string(), base_hour() + i as i64))
        .collect();
    produce(&server.addr, "people", &people);
    let visits: Vec<_> = (0..VISITS)
        .map(|i| {
            let who = (i * 7919) % PEOPLE;
            (
                format!("v{i}"),
                json!({ "WHO": format!("u{who}"), "N": i }).to_string(),
                base_hour() + PEOPLE as i64 + i as i64,
            )
        })
        .collect();
    produce(&server.addr, "visits", &visits);
    let (status, body) =
        ksql(&server.http, PEOPLE_VISITS_NAMED, json!({ "ksql.streams.auto.offset.reset": "earliest" }));
    assert_eq!(status, 200, "{body}");
    wait_until(WAIT, "every visit joined", || {
        let (status, answer) = query(&server.http, "SELECT * FROM named;", json!({}));
        (status == 200 && rows(&answer).len() >= VISITS).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, answer) = query(&server.http, "SELECT * FROM named;", json!({}));
    let joined = rows(&answer);
    assert_eq!(joined.len(), VISITS, "{partitions} partitions: each visit joined, once");
    assert!(joined.iter().all(|r| r[1].as_str().unwrap()[1..] == r[0].as_str().unwrap()[1..]), "names match ids");
}

/// A stream joined to two tables on different keys runs in levels: the first join's tasks
/// (`#j<p>`) send each joined row on by the second join's key to the second join's tasks;
/// aggregated by a third column, a second level of join tasks (`#j1-<p>`) sends them on by
/// group key to the aggregating tasks. Killed and restarted, every call is counted once.
#[test]
fn joins_on_different_keys_run_in_levels_of_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    for topic in ["calls", "lines", "owners"] {
        create_topic(&server.addr, topic, 2);
    }
    let lines: Vec<_> = (0..10)
        .map(|i| (format!("l{i}"), json!({ "OWNER": format!("o{}", i % 4) }).to_string(), base_hour()))
        .collect();
    produce(&server.addr, "lines", &lines);
    let owners: Vec<_> = (0..4)
        .map(|i| (format!("o{i}"), json!({ "CITY": format!("city{}", i % 3) }).to_string(), base_hour()))
        .collect();
    produce(&server.addr, "owners", &owners);
    const CALLS: usize = 3000;
    produce_calls(&server.addr, CALLS, 10);
    let (status, body) = ksql(
        &server.http,
        "CREATE TABLE lines (id STRING PRIMARY KEY, owner STRING) WITH (KAFKA_TOPIC='lines', VALUE_FORMAT='JSON');
         CREATE TABLE owners (id STRING PRIMARY KEY, city STRING) WITH (KAFKA_TOPIC='owners', VALUE_FORMAT='JSON');
         CREATE STREAM calls (cid STRING KEY, line STRING) WITH (KAFKA_TOPIC='calls', VALUE_FORMAT='JSON');
         CREATE STREAM located AS SELECT l.owner AS owner, c.cid AS cid, o.city AS city
             FROM calls c JOIN lines l ON c.line = l.id JOIN owners o ON l.owner = o.id;
         CREATE TABLE per_city AS SELECT o.city AS city, COUNT(*) AS calls
             FROM calls c JOIN lines l ON c.line = l.id JOIN owners o ON l.owner = o.id GROUP BY o.city;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let located = body[3]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    let per_city = body[4]["commandStatus"]["queryId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    server.restart();
    let tasks = placed_tasks(&server.http);
    let inputs = ["#r0", "#r1", "#r1-0", "#r1-1", "#r2-0", "#r2-1", "#j0", "#j1", "#0", "#1"];
    let mut expected: std::collections::BTreeSet<String> =
        [&located, &per_city].iter().flat_map(|q| inputs.iter().map(move |t| format!("{q}{t}"))).collect();
    expected.extend(["#j1-0", "#j1-1"].iter().map(|t| format!("{per_city}{t}")));
    assert_eq!(tasks, expected);
    let city_of = |line: usize| format!("city{}", (line % 4) % 3);
    let mut want: std::collections::BTreeMap<String, i64> = Default::default();
    for i in 0..CALLS {
        *want.entry(city_of(i % 10)).or_default() += 1;
    }
    let counts = || {
        let (status, answer) = query(&server.http, "SELECT * FROM per_city;", json!({}));
        assert_eq!(status, 200, "{answer:?}");
        rows(&answer)
            .into_iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
            .collect::<std::collections::BTreeMap<String, i64>>()
    };
    wait_until(WAIT, "every call counted by city", || (counts() == want).then_some(()));
    let out = consume_until(&server.addr, "LOCATED", "every call located", |o| o.len() >= CALLS);
    std::thread::sleep(Duration::from_millis(300));
    let (_, answer) = query(&server.http, "SELECT * FROM located;", json!({}));
    assert_eq!(rows(&answer).len(), CALLS, "each call once");
    for (owner, v, _, _) in &out {
        let line: usize = v["CID"].as_str().unwrap()[1..].parse::<usize>().unwrap() % 10;
        assert_eq!(owner, &format!("o{}", line % 4));
        assert_eq!(v["CITY"], json!(city_of(line)));
    }
    assert_eq!(counts(), want, "none counted twice");
}

/// The tasks a server runs (`GET /sql/placement`).
fn placed_tasks(http: &str) -> std::collections::BTreeSet<String> {
    let (status, placement) = get(http, "/sql/placement");
    assert_eq!(status, 200, "{placement}");
    placement["tasks"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// Calls `c0`..`c<count - 1>` (topic `calls`), call `i` on line `l<i % lines>`, a millisecond
/// apart after the base hour.
fn produce_calls(addr: &str, count: usize, lines: usize) {
    let calls: Vec<_> = (0..count)
        .map(|i| {
            (format!("c{i}"), json!({ "LINE": format!("l{}", i % lines) }).to_string(), base_hour() + 1 + i as i64)
        })
        .collect();
    produce(addr, "calls", &calls);
}
