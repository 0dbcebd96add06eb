//! `freshet sql` against a real `freshet serve`: scripts with -f and on standard input, tables in
//! the output, errors with the failing statement and a non-zero exit, INSERT VALUES reaching the
//! topic, an unreachable server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// Longest a `freshet sql` or `freshet consume` run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `freshet ARGS` with `stdin` piped in; bounded by RUN_TIMEOUT.
fn freshet(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .env_remove("FRESHET_HTTP")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn freshet");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    // Read both pipes on threads so the wait below can be bounded.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = vec![];
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = vec![];
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("freshet {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn sql(server: &Server, extra: &[&str], stdin: &str) -> Output {
    let mut args = vec!["sql", "--http", &server.http];
    args.extend_from_slice(extra);
    freshet(&args, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn scripts_run_from_files_and_standard_input() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());

    // A script file: comments, statements over several lines, variables from --define and
    // DEFINE, properties from --set and SET.
    let script = tmp.path().join("setup.sql");
    std::fs::write(
        &script,
        "-- the clicks
CREATE STREAM clicks (user_id STRING KEY, page STRING)
  WITH (KAFKA_TOPIC='${topic}', PARTITIONS=1, VALUE_FORMAT='JSON');
/* a comment; with a semicolon */
DEFINE page = 'home';
SET 'auto.offset.reset' = 'earliest';
INSERT INTO clicks (user_id, page) VALUES ('u1', '${page}');
INSERT INTO clicks (user_id, page) VALUES ('u2', 'semi;colon');
SHOW STREAMS;
DESCRIBE clicks;
SHOW PROPERTIES;
",
    )
    .unwrap();
    let out = sql(&server, &["-f", script.to_str().unwrap(), "--define", "topic=clicks_topic"], "");
    let stdout = ok(&out);
    assert!(stdout.contains(" Stream created"), "{stdout}");
    assert!(stdout.contains("Successfully changed local property 'auto.offset.reset' to 'earliest'."), "{stdout}");
    // SHOW STREAMS as a table, the header, the stream and its topic in aligned columns.
    let header = stdout.lines().find(|l| l.contains("Stream Name")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(header.contains("| Kafka Topic") && header.contains("| Value Format"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with(" CLICKS ")).unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(row.find("| clicks_topic"), header.find("| Kafka Topic"), "{stdout}");
    assert!(row.contains("| JSON"), "{stdout}");
    assert!(stdout.lines().any(|l| !l.is_empty() && l.chars().all(|c| c == '-')), "rules: {stdout}");
    // DESCRIBE: fields and types.
    assert!(stdout.contains("Name                 : CLICKS"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(" USER_ID") && l.ends_with("STRING (key)")), "{stdout}");
    // SHOW PROPERTIES shows what the shell sent.
    assert!(stdout.lines().any(|l| l.contains("auto.offset.reset") && l.contains("earliest")), "{stdout}");

    // The inserted rows are in the topic, variables substituted.
    let consumed =
        ok(&freshet(&["consume", "clicks_topic", "--from-beginning", "--print-key", "--bootstrap", &server.addr], ""));
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines, ["u1\t{\"PAGE\":\"home\"}", "u2\t{\"PAGE\":\"semi;colon\"}"], "{consumed}");

    // Standard input (not a terminal) runs as a script too, as does `-f -`; `exit` ends it.
    let piped = "CREATE STREAM views (id STRING KEY, n INT)\n WITH (KAFKA_TOPIC='views', PARTITIONS=1, VALUE_FORMAT='JSON');\nSHOW STREAMS;\nexit\nSHOW TOPICS;\n";
    let stdout = ok(&sql(&server, &[], piped));
    assert!(stdout.contains(" VIEWS "), "{stdout}");
    assert!(stdout.contains(" CLICKS "), "{stdout}");
    assert!(!stdout.contains("Kafka Topic | Partitions"), "nothing runs after exit: {stdout}");
    let stdout = ok(&sql(&server, &["-f", "-"], "SHOW TOPICS;"));
    let header = stdout.lines().next().unwrap_or_default();
    assert!(header.contains("Kafka Topic") && header.contains("Partitions"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(" views ")), "{stdout}");
    assert!(!stdout.contains("_freshet"), "internal topics are hidden: {stdout}");
    // A last statement without its ';' still runs.
    assert!(ok(&sql(&server, &[], "SHOW STREAMS")).contains(" VIEWS "));
}

#[test]
fn a_failing_statement_stops_the_script_with_its_text_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let script = tmp.path().join("bad.sql");
    std::fs::write(
        &script,
        "CREATE STREAM s1 (id INT) WITH (KAFKA_TOPIC='s1', PARTITIONS=1, VALUE_FORMAT='JSON');\n\
         \n\
         DROP STREAM no_such_stream;\n\
         CREATE STREAM s2 (id INT) WITH (KAFKA_TOPIC='s2', PARTITIONS=1, VALUE_FORMAT='JSON');\n",
    )
    .unwrap();
    let out = sql(&server, &["-f", script.to_str().unwrap()], "");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("NO_SUCH_STREAM"), "the server's message: {stderr}");
    assert!(stderr.contains("bad.sql:3:") && stderr.contains("DROP STREAM no_such_stream;"), "{stderr}");
    assert!(text(&out.stdout).contains("Stream created"), "the first statement ran");
    // The statement after the failing one did not run.
    let stdout = ok(&sql(&server, &[], "SHOW STREAMS;"));
    assert!(stdout.contains(" S1 ") && !stdout.contains(" S2 "), "{stdout}");

    // A syntax error on standard input: the positioned message, a non-zero exit.
    let out =
        sql(&server, &[], "SHOW STREAMS;\nCREATE STREAM oops (id INT) WITH (KAFKA_TOPIC='x' VALUE_FORMAT='JSON');\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 1:"), "{stderr}");
    assert!(stderr.contains("<stdin>:2:") && stderr.contains("oops"), "{stderr}");
    // The shell's own statements fail the same way.
    let out = sql(&server, &[], "UNSET 'never.set';");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("'never.set' is not set"), "{}", text(&out.stderr));
}

#[test]
fn select_goes_to_the_query_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let out = sql(
        &server,
        &["--set", "auto.offset.reset=earliest"],
        "CREATE STREAM nums (id STRING KEY, n INT) WITH (KAFKA_TOPIC='nums', PARTITIONS=1, VALUE_FORMAT='JSON');
         INSERT INTO nums (id, n) VALUES ('a', 1);
         SELECT id, n FROM nums EMIT CHANGES LIMIT 1;",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The push query's row in a box.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| ID ") && stdout.contains("| a "), "{stdout}");
    // A SELECT the server refuses: the error and the statement, from /query, not /ksql.
    let out = sql(&server, &[], "SELECT id, n FROM nums WHERE nosuch = 1;");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("NOSUCH"), "{stderr}");
    assert!(stderr.contains("SELECT id, n FROM nums"), "{stderr}");
}

#[test]
fn an_unreachable_server_is_named() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = freshet(&["sql", "--http", &addr], "SHOW STREAMS;");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("http://{addr}")) && stderr.contains("could not reach"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = freshet(&["sql", "--http", &addr, "-f", "/no/such/script.sql"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("opening /no/such/script.sql"), "{}", text(&out.stderr));
    let out = freshet(&["sql", "--http", "nonsense"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ADDR:PORT"), "{}", text(&out.stderr));
}

/// Not an end-to-end test: the server's `/query` is not there yet, so this one checks the shell's
/// reading of ksqlDB's streamed `/query` answer (chunked, one element per line) and its row
/// boxes against a canned answer from a stand-in HTTP listener.
#[test]
fn query_rows_from_a_canned_streamed_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stand_in = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            if request_line.starts_with("GET /info") {
                let info = r#"{"KsqlServerInfo":{"version":"0.29.0","serverStatus":"RUNNING"}}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", info.len());
                conn.write_all(head.as_bytes()).unwrap();
                conn.write_all(info.as_bytes()).unwrap();
                continue;
            }
            assert!(request_line.starts_with("POST /query"), "{request_line}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["ksql"], "SELECT * FROM t EMIT CHANGES LIMIT 2;");
            assert_eq!(body["streamsProperties"]["auto.offset.reset"], "earliest");
            conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
            for line in [
                "[{\"header\":{\"queryId\":\"q1\",\"schema\":\"`ID` STRING KEY, `COUNT` BIGINT\"}},\n",
                "{\"row\":{\"columns\":[\"a\",1]}},\n",
                "{\"row\":{\"columns\":[\"bb\",22]}},\n",
                "{\"finalMessage\":\"Limit Reached\"}]\n",
            ] {
                conn.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).unwrap();
                conn.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            conn.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let out = freshet(
        &["sql", "--http", &addr, "--set", "auto.offset.reset=earliest"],
        "SELECT * FROM t EMIT CHANGES LIMIT 2;",
    );
    stand_in.join().unwrap();
    let stdout = ok(&out);
    let expected = "\
+--------------+--------------+
| ID           | COUNT        |
+--------------+--------------+
| a            | 1            |
| bb           | 22           |
+--------------+--------------+
Limit Reached
";
    assert_eq!(stdout, expected);
}

#[test]
fn functions_explain_and_print_in_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let stdout = ok(&sql(
        &server,
        &[],
        "CREATE STREAM pings (id STRING KEY, n INT) WITH (KAFKA_TOPIC='pings', PARTITIONS=1, VALUE_FORMAT='JSON');
INSERT INTO pings (id, n) VALUES ('p1', 7);
SET 'auto.offset.reset' = 'earliest';
CREATE STREAM big_pings AS SELECT id, n FROM pings WHERE n > 5;
SHOW FUNCTIONS;
DESCRIBE FUNCTION ucase;
EXPLAIN SELECT id, n * 2 AS twice FROM pings EMIT CHANGES;
PRINT 'pings' FROM BEGINNING LIMIT 1;
",
    ));
    // SHOW FUNCTIONS: a listing with the categories.
    let header = stdout.lines().find(|l| l.contains("Function Name")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(header.contains("| Category") && header.contains("| Type"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with(" ABS ") && l.contains("MATHEMATICAL") && l.contains("SCALAR")),
        "{stdout}"
    );
    // DESCRIBE FUNCTION: the variations.
    assert!(stdout.contains("Name        : UCASE"), "{stdout}");
    assert!(stdout.contains("Variation   : UCASE(arg1 STRING)"), "{stdout}");
    // EXPLAIN: the plan and topology.
    assert!(stdout.contains("Sources that this query reads from: PINGS"), "{stdout}");
    assert!(stdout.contains("Execution plan") && stdout.contains("Processing topology"), "{stdout}");
    assert!(stdout.contains("[ TRANSIENT ]"), "{stdout}");
    // PRINT: the record's line.
    assert!(stdout.contains("Key format: KAFKA_STRING\nValue format: JSON\nrowtime: "), "no blank lines: {stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("rowtime: ") && l.contains("key: p1, value: {\"N\":7}, partition: 0")),
        "{stdout}"
    );
}
