//! SHOW FUNCTIONS, DESCRIBE FUNCTION, EXPLAIN and PRINT against a real `freshet serve`, over
//! HTTP, checking ksqlDB's response shapes.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::rest::{ksql, names};
use common::Server;
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(30);

/// POSTs to /query; (status, content type, body as text).
fn query_text(http: &str, sql: &str) -> (u16, String, String) {
    let body = json!({ "ksql": sql, "streamsProperties": {} }).to_string();
    match ureq::post(&format!("http://{http}/query")).timeout(WAIT).send_string(&body) {
        Ok(r) => (r.status(), r.content_type().to_string(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.content_type().to_string(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST /query: {e}"),
    }
}

fn one(body: &Json) -> &Json {
    let a = body.as_array().unwrap_or_else(|| panic!("an array: {body}"));
    assert_eq!(a.len(), 1, "{body}");
    &a[0]
}

#[test]
fn functions_explain_and_print_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = server.http.clone();

    // SHOW FUNCTIONS / LIST FUNCTIONS: the registry, with each function's category and type.
    for stmt in ["SHOW FUNCTIONS;", "LIST FUNCTIONS;"] {
        let (status, body) = ksql(&http, stmt, json!({}));
        assert_eq!(status, 200, "{body}");
        let e = one(&body);
        assert_eq!(e["@type"], "function_names");
        assert_eq!(e["statementText"], stmt);
        let fs = e["functions"].as_array().unwrap();
        let find = |n: &str| fs.iter().find(|f| f["name"] == n).unwrap_or_else(|| panic!("{n} listed"));
        assert_eq!(find("ABS"), &json!({ "name": "ABS", "category": "MATHEMATICAL", "type": "SCALAR" }));
        assert_eq!(find("COUNT")["type"], "AGGREGATE");
        assert_eq!(find("EXPLODE"), &json!({ "name": "EXPLODE", "category": "TABLE", "type": "TABLE" }));
        assert_eq!(find("DATEADD")["category"], "DATE / TIME");
        assert!(fs.len() > 150, "{}", fs.len());
    }

    // DESCRIBE FUNCTION: ksqlDB's describe_function entity, the signatures the registry knows.
    let (status, body) = ksql(&http, "DESCRIBE FUNCTION lpad;", json!({}));
    assert_eq!(status, 200, "{body}");
    let f = one(&body);
    assert_eq!(f["@type"], "describe_function");
    assert_eq!(f["name"], "LPAD");
    assert_eq!(f["type"], "SCALAR");
    assert_eq!(f["path"], "internal");
    for k in ["description", "author", "version"] {
        assert!(f[k].is_string(), "{k}: {f}");
    }
    let variants = f["functions"].as_array().unwrap();
    let v = variants
        .iter()
        .find(|v| v["argumentTypes"] == json!(["STRING", "INTEGER", "STRING"]))
        .expect("LPAD(s, n, pad)");
    assert_eq!(v["returnType"], "STRING");
    assert_eq!(v["arguments"][1], json!({ "name": "arg2", "type": "INTEGER", "description": "", "isVariadic": false }));
    let (_, body) = ksql(&http, "DESCRIBE FUNCTION EXPLODE;", json!({}));
    let f = one(&body);
    assert_eq!(f["type"], "TABLE");
    assert_eq!(f["functions"][0]["argumentTypes"], json!(["ARRAY<T>"]));
    assert!(f["description"].as_str().unwrap().contains("one row per element"), "{f}");
    let (_, body) = ksql(&http, "DESCRIBE FUNCTION topk;", json!({}));
    assert_eq!(one(&body)["type"], "AGGREGATE");
    let (status, err) = ksql(&http, "DESCRIBE FUNCTION no_such_fn;", json!({}));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["@type"], "statement_error");
    assert_eq!(err["error_code"], 40001);
    assert_eq!(err["message"], "Can't find any functions with the name 'NO_SUCH_FN'");

    // A stream, rows and a persistent query to explain and print.
    let (status, body) = ksql(
        &http,
        "CREATE STREAM events (k STRING KEY, n INT, tags ARRAY<STRING>) WITH (kafka_topic='events', value_format='JSON', partitions=1);
         INSERT INTO events (k, n, tags) VALUES ('a', 1, ARRAY['x']);
         INSERT INTO events (k, n, tags) VALUES ('b', 20, ARRAY['y', 'z']);
         INSERT INTO events (k, n, tags) VALUES ('c', 300, ARRAY['w']);
         CREATE STREAM big AS SELECT k, n FROM events WHERE n > 10;",
        json!({ "ksql.streams.auto.offset.reset": "earliest" }),
    );
    assert_eq!(status, 200, "{body}");
    let query_id = body[1]["commandStatus"]["queryId"].as_str().expect("a query id").to_string();

    // EXPLAIN <query id>: queryDescription of the running query.
    let (status, body) = ksql(&http, &format!("EXPLAIN {query_id};"), json!({}));
    assert_eq!(status, 200, "{body}");
    let e = one(&body);
    assert_eq!(e["@type"], "queryDescription");
    let d = &e["queryDescription"];
    assert_eq!(d["id"], query_id.as_str());
    assert!(d["statementText"].as_str().unwrap().starts_with("CREATE STREAM big AS SELECT"), "{d}");
    assert_eq!(d["sources"], json!(["EVENTS"]));
    assert_eq!(d["sinks"], json!(["BIG"]));
    assert_eq!(d["sinkKafkaTopics"], json!(["BIG"]));
    assert_eq!(d["queryType"], "PERSISTENT");
    assert_eq!(d["state"], "RUNNING");
    assert_eq!(d["windowType"], Json::Null);
    assert_eq!(d["fields"][0]["name"], "K");
    assert_eq!(d["fields"][0]["type"], "KEY");
    assert_eq!(d["fields"][1]["name"], "N");
    let topology = d["topology"].as_str().unwrap();
    assert!(topology.contains("[ SOURCE ] STREAM EVENTS (topic: events"), "{topology}");
    assert!(topology.contains("[ FILTER ] (N > 10)"), "{topology}");
    assert!(topology.contains("[ SINK ] STREAM BIG"), "{topology}");
    assert!(d["executionPlan"].as_str().unwrap().contains("> [ SINK ]"), "{d}");
    for k in ["overriddenProperties", "ksqlHostQueryStatus", "queryErrors", "tasksMetadata"] {
        assert!(!d[k].is_null(), "{k}: {d}");
    }
    // Lower case ids are found too; unknown ones are ksqlDB's error.
    let (status, _) = ksql(&http, &format!("EXPLAIN {};", query_id.to_ascii_lowercase()), json!({}));
    assert_eq!(status, 200);
    let (status, err) = ksql(&http, "EXPLAIN CSAS_NOPE_9;", json!({}));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["@type"], "statement_error");
    assert_eq!(
        err["message"],
        "Query with id:CSAS_NOPE_9 does not exist, use SHOW QUERIES to view the full set of queries."
    );

    // EXPLAIN <statement>: planned, not run.
    let (status, body) = ksql(
        &http,
        "EXPLAIN CREATE TABLE counts AS SELECT k, COUNT(*) AS c FROM events WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY k EMIT CHANGES;
         EXPLAIN SELECT k, EXPLODE(tags) AS tag FROM events EMIT CHANGES LIMIT 2;",
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let d = &body[0]["queryDescription"];
    assert_eq!(d["id"], "");
    assert!(d["statementText"].as_str().unwrap().starts_with("CREATE TABLE counts AS SELECT"), "{d}");
    assert_eq!(d["windowType"], "TUMBLING");
    assert_eq!(d["sinks"], json!(["COUNTS"]));
    assert_eq!(d["fields"][0]["type"], "PRIMARY_KEY");
    assert!(d["topology"].as_str().unwrap().contains("[ AGGREGATE ] GROUP BY K | WINDOW TUMBLING"), "{d}");
    let d = &body[1]["queryDescription"];
    assert_eq!(d["queryType"], "PUSH");
    assert_eq!(d["sinks"], json!([]));
    assert!(d["topology"].as_str().unwrap().contains("[ FLAT_MAP ] EXPLODE(TAGS)"), "{d}");
    let (_, body) = ksql(&http, "SHOW QUERIES; SHOW TABLES;", json!({}));
    assert_eq!(body[0]["queries"].as_array().unwrap().len(), 1, "EXPLAIN started nothing: {body}");
    assert_eq!(names(&body[1], "tables"), Vec::<String>::new());
    let (status, err) = ksql(&http, "EXPLAIN SELECT * FROM nowhere EMIT CHANGES;", json!({}));
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("NOWHERE"), "{err}");

    // PRINT over /query: ksqlDB's lines, ending at LIMIT.
    let (status, ctype, text) = query_text(&http, "PRINT 'events' FROM BEGINNING LIMIT 2;");
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "Key format: KAFKA_STRING");
    assert_eq!(lines[1], "Value format: JSON");
    for (line, (k, n)) in lines[2..].iter().zip([("a", 1), ("b", 20)]) {
        assert!(line.starts_with("rowtime: 20") && line.contains(" Z, key: "), "{line}");
        assert!(line.contains(&format!(", key: {k}, value: {{\"N\":{n},")), "{line}");
        assert!(line.ends_with(", partition: 0"), "{line}");
    }
    // INTERVAL: every second record; an unquoted name matches whatever its case.
    let (_, _, text) = query_text(&http, "PRINT events FROM BEGINNING INTERVAL 2 LIMIT 2;");
    let keys: Vec<&str> =
        text.lines().skip(2).map(|l| l.split(", key: ").nth(1).unwrap().split(',').next().unwrap()).collect();
    assert_eq!(keys, ["a", "c"], "{text}");
    // Without FROM BEGINNING: only new records. The answer streams; read the first lines.
    let body = json!({ "ksql": "PRINT 'events' LIMIT 1;", "streamsProperties": {} }).to_string();
    let r = ureq::post(&format!("http://{http}/query")).timeout(WAIT).send_string(&body).expect("PRINT");
    let mut reader = BufReader::new(r.into_reader());
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = ksql(&http, "INSERT INTO events (k, n) VALUES ('d', 4);", json!({}));
    assert_eq!(status, 200, "{body}");
    let mut printed = String::new();
    for _ in 0..3 {
        reader.read_line(&mut printed).unwrap();
    }
    assert!(printed.contains(", key: d, value: {\"N\":4,"), "{printed}");
    let mut rest = String::new();
    reader.read_line(&mut rest).unwrap();
    assert_eq!(rest, "", "the answer ends at LIMIT");

    // Errors: an unknown topic, PRINT on /ksql or /query-stream.
    let (status, _, text) = query_text(&http, "PRINT 'nope' FROM BEGINNING;");
    assert_eq!(status, 400, "{text}");
    let err: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(err["@type"], "statement_error");
    assert!(err["message"].as_str().unwrap().starts_with("Could not find topic 'nope'"), "{err}");
    let (status, err) = ksql(&http, "PRINT 'events';", json!({}));
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("'/query'"), "{err}");
    let r = ureq::post(&format!("http://{http}/query-stream"))
        .timeout(WAIT)
        .send_string(&json!({ "sql": "PRINT 'events' FROM BEGINNING;" }).to_string());
    assert!(matches!(r, Err(ureq::Error::Status(400, _))), "{r:?}");
}
