//! The engine over in-memory topics: statements in, records in, records out.

use std::sync::Arc;

use freshet_sql::engine::Engine;
use freshet_sql::topics::{MemTopics, Record, Topics};

fn engine() -> (Arc<MemTopics>, Engine) {
    let topics = Arc::new(MemTopics::new());
    let mut e = Engine::new(topics.clone());
    e.auto_create_topics = true;
    (topics, e)
}

/// An engine whose queries keep their state in store files in `dir` with changelogs, commit
/// after every input record and restore their state from both, as after a restart.
fn restoring_engine(dir: &std::path::Path) -> (Arc<MemTopics>, Engine) {
    let (topics, mut e) = engine();
    e.restore_every_step = Some(dir.to_path_buf());
    (topics, e)
}

fn put(topics: &MemTopics, topic: &str, key: Option<&str>, value: Option<&str>, ts: i64) {
    topics
        .append(
            topic,
            0,
            vec![Record {
                key: key.map(|k| k.as_bytes().to_vec().into()),
                value: value.map(|v| v.as_bytes().to_vec().into()),
                timestamp: ts,
                headers: vec![],
            }],
        )
        .unwrap();
}

fn all(topics: &MemTopics, topic: &str) -> Vec<(Option<String>, Option<String>, i64)> {
    topics
        .read(topic, 0, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.record.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                c.record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                c.record.timestamp,
            )
        })
        .collect()
}

#[test]
fn a_persistent_query_filters_and_projects_a_stream() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM orders (id STRING KEY, amount DOUBLE, item VARCHAR) WITH (kafka_topic='orders', value_format='JSON');
         CREATE STREAM big AS SELECT id, UCASE(item) AS item, amount * 2 AS doubled FROM orders WHERE amount > 10;",
    )
    .unwrap();
    put(&topics, "orders", Some("a"), Some(r#"{"amount": 5, "item": "pen"}"#), 1);
    put(&topics, "orders", Some("b"), Some(r#"{"AMOUNT": 12.5, "ITEM": "book"}"#), 2);
    put(&topics, "orders", Some("c"), Some("not json"), 3);
    e.run_until_idle().unwrap();
    assert_eq!(all(&topics, "BIG"), vec![(Some("b".into()), Some(r#"{"ITEM":"BOOK","DOUBLED":25.0}"#.into()), 2)]);
    // The bad record went to the processing log and the query went on.
    assert_eq!(e.processing_log.len(), 1);
    assert!(e.processing_log[0].message.contains("Failed to deserialize value"));
}

#[test]
fn an_aggregation_counts_per_key_and_retracts_on_having() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM clicks (user VARCHAR KEY, page VARCHAR) WITH (kafka_topic='clicks', value_format='JSON');
         CREATE TABLE per_user AS SELECT user, COUNT(*) AS n, COLLECT_LIST(page) AS pages FROM clicks GROUP BY user HAVING COUNT(*) < 3;",
    )
    .unwrap();
    for (i, (u, p)) in [("ann", "a"), ("bob", "b"), ("ann", "c"), ("ann", "d")].iter().enumerate() {
        put(&topics, "clicks", Some(u), Some(&format!(r#"{{"page":"{p}"}}"#)), i as i64);
    }
    e.run_until_idle().unwrap();
    assert_eq!(
        all(&topics, "PER_USER"),
        vec![
            (Some("ann".into()), Some(r#"{"N":1,"PAGES":["a"]}"#.into()), 0),
            (Some("bob".into()), Some(r#"{"N":1,"PAGES":["b"]}"#.into()), 1),
            (Some("ann".into()), Some(r#"{"N":2,"PAGES":["a","c"]}"#.into()), 2),
            (Some("ann".into()), None, 3),
        ]
    );
}

#[test]
fn a_tumbling_window_keys_results_by_window_start() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v BIGINT) WITH (kafka_topic='t', value_format='DELIMITED');
         CREATE TABLE s AS SELECT k, SUM(v) AS total FROM t WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY k;",
    )
    .unwrap();
    put(&topics, "t", Some("x"), Some("1"), 1_000);
    put(&topics, "t", Some("x"), Some("2"), 9_000);
    put(&topics, "t", Some("x"), Some("4"), 10_000);
    e.run_until_idle().unwrap();
    let out = topics.read("S", 0, 0, 10).unwrap();
    let decoded: Vec<(i64, String)> = out
        .iter()
        .map(|c| {
            let k = c.record.key.as_ref().unwrap();
            let start = i64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            (start, String::from_utf8(c.record.value.clone().unwrap().to_vec()).unwrap())
        })
        .collect();
    assert_eq!(decoded, vec![(0, "1".into()), (0, "3".into()), (10_000, "4".into())]);
}

#[test]
fn every_window_of_a_key_goes_to_the_partition_of_the_key() {
    // As Kafka Streams' WindowedStreamPartitioner: the partition of a windowed result is the
    // hash of its key without the window, so a key's windows share a partition.
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v BIGINT) WITH (kafka_topic='t', value_format='DELIMITED');
         CREATE TABLE s WITH (partitions=4) AS SELECT k, COUNT(*) AS n FROM t WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k;",
    )
    .unwrap();
    for i in 0..40 {
        put(&topics, "t", Some(&format!("k{}", i % 5)), Some("1"), i * 700);
    }
    e.run_until_idle().unwrap();
    let mut seen = 0;
    for p in 0..4 {
        for c in topics.read("S", p, 0, usize::MAX).unwrap() {
            let k = c.record.key.unwrap();
            let unwindowed = &k[..k.len() - 8];
            assert_eq!(freshet_common::partitioner::partition_for_key(unwindowed, 4), p);
            seen += 1;
        }
    }
    assert_eq!(seen, 40, "one update per record");
}

#[test]
fn session_windows_merge_within_the_gap_and_drop_records_beyond_grace() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v BIGINT) WITH (kafka_topic='t', value_format='DELIMITED');
         CREATE TABLE s AS SELECT k, COUNT(*) AS n FROM t WINDOW SESSION (10 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY k;",
    )
    .unwrap();
    for (k, ts) in [("x", 0), ("y", 1_000), ("x", 20_000), ("x", 9_000), ("x", 12_000), ("y", 3_000)] {
        put(&topics, "t", Some(k), Some("1"), ts);
    }
    e.run_until_idle().unwrap();
    let out = topics.read("S", 0, 0, 100).unwrap();
    // Kafka Streams' session key: the key, the window's end, its start.
    let decoded: Vec<(String, i64, i64, Option<String>)> = out
        .iter()
        .map(|c| {
            let k = c.record.key.as_ref().unwrap();
            let n = k.len();
            let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap());
            let key = String::from_utf8(k[..n - 16].to_vec()).unwrap();
            (
                key,
                be(&k[n - 8..]),
                be(&k[n - 16..n - 8]),
                c.record.value.clone().map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect();
    let row = |k: &str, s: i64, e: i64, v: Option<&str>| (k.to_string(), s, e, v.map(String::from));
    assert_eq!(
        decoded,
        vec![
            row("x", 0, 0, Some("1")),
            row("y", 1_000, 1_000, Some("1")),
            row("x", 20_000, 20_000, Some("1")),
            // x's [0, 0] expired (it ended more than gap + grace before stream time 20 s): a new
            // session, more than the gap from the one at 20 s.
            row("x", 9_000, 9_000, Some("1")),
            // Within the gap of both: they merge, the old sessions retracted oldest first.
            row("x", 9_000, 9_000, None),
            row("x", 20_000, 20_000, None),
            row("x", 9_000, 20_000, Some("3")),
            // y at 3 s: its session would end before 20 s - grace - gap, so the record is late.
        ]
    );
}

#[test]
fn statement_errors_name_the_problem_and_the_position() {
    let (_topics, mut e) = engine();
    let err = e
        .execute(
            "CREATE STREAM s (k STRING KEY, v INT) WITH (kafka_topic='s', value_format='JSON'); SELECT * FROM s WHERE;",
        )
        .unwrap_err();
    assert!(err.pos.is_some(), "{err}");
    let err = e.execute("CREATE STREAM o AS SELECT k, nope FROM s;").unwrap_err();
    assert!(err.to_string().contains("NOPE"), "{err}");
    let err =
        e.execute("CREATE TABLE bad (k STRING KEY, v INT) WITH (kafka_topic='b', value_format='JSON');").unwrap_err();
    assert!(err.to_string().contains("PRIMARY KEY"), "{err}");
}

/// Decodes a time-windowed output: (key, window start, value).
fn windowed(topics: &MemTopics, topic: &str) -> Vec<(String, i64, Option<String>)> {
    topics
        .read(topic, 0, 0, 100)
        .unwrap()
        .iter()
        .map(|c| {
            let k = c.record.key.as_ref().unwrap();
            let n = k.len();
            let start = i64::from_be_bytes(k[n - 8..].try_into().unwrap());
            let key = String::from_utf8(k[..n - 8].to_vec()).unwrap();
            (key, start, c.record.value.clone().map(|v| String::from_utf8(v.to_vec()).unwrap()))
        })
        .collect()
}

#[test]
fn emit_final_emits_a_window_once_it_closes_unless_it_expired_unseen() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v BIGINT) WITH (kafka_topic='t', value_format='DELIMITED');
         CREATE TABLE s AS SELECT k, COUNT(*) AS n FROM t
           WINDOW TUMBLING (SIZE 2 MILLISECONDS, GRACE PERIOD 1 MILLISECONDS) GROUP BY k EMIT FINAL;",
    )
    .unwrap();
    // [0, 2) gets four records (two late, within grace); [2, 4) one. The record at 5 closes
    // both, but the window store (retention: size + grace = 3 ms behind the latest window start,
    // 4) no longer holds [0, 2): only [2, 4) is emitted.
    for ts in [0, 1, 2, 1, 0, 5] {
        put(&topics, "t", Some("x"), Some("1"), ts);
    }
    e.run_until_idle().unwrap();
    assert_eq!(windowed(&topics, "S"), vec![("x".to_string(), 2, Some("1".to_string()))]);

    let err = e.execute("CREATE TABLE nw AS SELECT k, COUNT(*) AS n FROM t GROUP BY k EMIT FINAL;").unwrap_err();
    assert!(err.to_string().contains("EMIT FINAL is only supported for windowed aggregations."), "{err}");
}

#[test]
fn emit_final_session_windows_emit_closed_sessions_only() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v BIGINT) WITH (kafka_topic='t', value_format='DELIMITED');
         CREATE TABLE s AS SELECT k, COUNT(*) AS n FROM t
           WINDOW SESSION (5 MILLISECONDS, GRACE PERIOD 6 MILLISECONDS) GROUP BY k EMIT FINAL;",
    )
    .unwrap();
    for ts in [0, 4, 8, 12, 14, 30, 29, 17, 42] {
        put(&topics, "t", Some("x"), Some("1"), ts);
    }
    e.run_until_idle().unwrap();
    let out: Vec<(i64, i64, Option<String>)> = topics
        .read("S", 0, 0, 100)
        .unwrap()
        .iter()
        .map(|c| {
            let k = c.record.key.as_ref().unwrap();
            let n = k.len();
            let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap());
            (
                be(&k[n - 8..]),
                be(&k[n - 16..n - 8]),
                c.record.value.clone().map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect();
    // No updates nor retractions: each session once, when stream time passes its end + gap + grace.
    assert_eq!(out, vec![(0, 14, Some("5".to_string())), (29, 30, Some("2".to_string()))]);
}

#[test]
fn earliest_by_offset_keeps_the_earliest_rows_when_sessions_merge() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM t (k STRING KEY, v INT) WITH (kafka_topic='t', value_format='JSON');
         CREATE TABLE s AS SELECT k, EARLIEST_BY_OFFSET(v, 2, false) AS e FROM t
           WINDOW w SESSION (1 SECONDS) GROUP BY k;",
    )
    .unwrap();
    put(&topics, "t", Some("x"), Some(r#"{"v": null}"#), 0);
    put(&topics, "t", Some("x"), Some(r#"{"v": 1}"#), 1500);
    put(&topics, "t", Some("x"), Some(r#"{"v": 7}"#), 700);
    e.run_until_idle().unwrap();
    let values: Vec<Option<String>> = topics
        .read("S", 0, 0, 100)
        .unwrap()
        .into_iter()
        .map(|c| c.record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()))
        .collect();
    // The merged session keeps the two earliest rows by arrival: null (not ignored), then 1.
    assert_eq!(values.last().unwrap().as_deref(), Some(r#"{"E":[null,1]}"#));
}

#[test]
fn aggregation_statements_refused_as_ksqldb_refuses_them() {
    let (_topics, mut e) = engine();
    e.execute(
        "CREATE STREAM d (k STRING KEY, name STRING, v INT) WITH (kafka_topic='d', value_format='DELIMITED');
         CREATE STREAM kf (k STRING KEY, v STRING) WITH (kafka_topic='kf', value_format='KAFKA');",
    )
    .unwrap();
    let cases = [
        // AVG keeps a STRUCT of sum and count: not something a DELIMITED internal topic can hold.
        (
            "CREATE TABLE a AS SELECT k, AVG(v) AS x FROM d GROUP BY k;",
            "has an intermediate type that the value format",
        ),
        (
            "CREATE TABLE b AS SELECT v, COUNT(*) AS n FROM kf GROUP BY v;",
            "Source(s) KF are using the 'KAFKA' value format",
        ),
        (
            "CREATE TABLE c AS SELECT COUNT(*) AS n FROM d GROUP BY name, d.name;",
            "Duplicate GROUP BY expression: D.NAME",
        ),
        (
            "CREATE TABLE e AS SELECT name, name AS name2, COUNT(*) AS n FROM d GROUP BY name;",
            "The projection contains a key column more than once: `NAME` and `NAME2`.",
        ),
    ];
    for (sql, want) in cases {
        let err = e.execute(sql).unwrap_err();
        assert!(err.to_string().contains(want), "{sql}: {err}");
    }
    // Primitive intermediate state is fine in DELIMITED.
    e.execute("CREATE TABLE f AS SELECT k, SUM(v) AS x, COUNT(*) AS n FROM d GROUP BY k;").unwrap();
}

#[test]
fn collect_list_keeps_at_most_the_configured_number_of_values() {
    let (topics, mut e) = engine();
    e.properties.insert("ksql.functions.collect_list.limit".into(), "2".into());
    e.execute(
        "CREATE STREAM t (k STRING KEY, v INT) WITH (kafka_topic='t', value_format='JSON');
         CREATE TABLE s AS SELECT k, COLLECT_LIST(v) AS l FROM t GROUP BY k;",
    )
    .unwrap();
    for v in 1..=3 {
        put(&topics, "t", Some("x"), Some(&format!(r#"{{"v": {v}}}"#)), v);
    }
    e.run_until_idle().unwrap();
    let last = all(&topics, "S").pop().unwrap();
    assert_eq!(last.1.as_deref(), Some(r#"{"L":[1,2]}"#));
    let err = e
        .execute("CREATE TABLE w (k STRING PRIMARY KEY, v INT) WITH (kafka_topic='w', value_format='JSON', WINDOW_TYPE='SESSION', WINDOW_SIZE='1 SECOND');")
        .unwrap_err();
    assert!(err.to_string().contains("'WINDOW_SIZE' should not be set for SESSION windows."), "{err}");
}

#[test]
fn a_refused_key_format_names_the_rewritten_statement() {
    let (_topics, mut e) = engine();
    e.execute("CREATE STREAM t (a INT KEY, b INT) WITH (kafka_topic='t', value_format='JSON');").unwrap();
    let err = e.execute("CREATE TABLE o AS SELECT b, a, b + a, COUNT(*) FROM t GROUP BY a, b;").unwrap_err();
    let want = "\nStatement: CREATE TABLE O AS SELECT\n  T.B B,\n  T.A A,\n  (T.B + T.A) KSQL_COL_0,\n  COUNT(*) KSQL_COL_1\nFROM T T\nGROUP BY T.A, T.B\nEMIT CHANGES";
    assert!(err.to_string().starts_with("Key format does not support schema."), "{err}");
    assert!(err.to_string().ends_with(want), "{err}");
}

/// Streams L (k, v) and R (k, w) and their one-hour inner join J with `filter`, each query's
/// state committed and restored after every input record (in `dir`).
fn join_engine(dir: &std::path::Path, filter: &str) -> (Arc<MemTopics>, Engine) {
    let (topics, mut e) = restoring_engine(dir);
    e.execute(&format!(
        "CREATE STREAM l (k STRING KEY, v INT) WITH (kafka_topic='l', value_format='JSON', partitions=1);
         CREATE STREAM r (k STRING KEY, w INT) WITH (kafka_topic='r', value_format='JSON', partitions=1);
         CREATE STREAM j AS SELECT l.k AS k, v, w FROM l JOIN r WITHIN 1 HOUR ON l.k = r.k {filter};"
    ))
    .unwrap();
    (topics, e)
}

/// A stream-stream join's buffers hold one state entry per record: a hot join key with many
/// buffered records costs each commit only its new records (it used to re-encode the key's
/// whole buffer into the changelog), and the state restored after every record joins the same.
#[test]
fn a_hot_join_key_writes_each_buffered_record_to_the_changelog_once() {
    let dir = tempfile::tempdir().unwrap();
    let (topics, mut e) = join_engine(dir.path(), "");
    let n = 40;
    for i in 0..n {
        put(&topics, "l", Some("hot"), Some(&format!(r#"{{"v": {i}}}"#)), 1000 + i);
    }
    for i in 0..n {
        put(&topics, "r", Some("hot"), Some(&format!(r#"{{"w": {i}}}"#)), 2000 + i);
    }
    e.run_until_idle().unwrap();
    let out = all(&topics, "J");
    assert_eq!(out.len() as i64, n * n, "every left record joins every right record");
    assert_eq!(out[0].1.as_deref(), Some(r#"{"V":0,"W":0}"#));
    assert_eq!(out.last().unwrap().1.as_deref(), Some(r#"{"V":39,"W":39}"#));

    let changelog = topics.list_topics().into_iter().find(|t| t.ends_with("-changelog")).expect("a changelog");
    let records = topics.read(&changelog, 0, 0, usize::MAX).unwrap();
    let buffered: Vec<_> = records.iter().filter(|c| c.record.key.as_ref().is_some_and(|k| k[0] >= 128)).collect();
    let largest = buffered.iter().map(|c| c.record.value.as_ref().unwrap().len()).max().unwrap();
    assert!(buffered.len() as i64 >= 2 * n, "one entry per buffered record: {}", buffered.len());
    // One record's entry, not a growing list of the key's records (40 of them: over 1 KB).
    assert!(largest < 200, "largest changelog entry {largest} bytes");

    // Without a grace period records are kept 24 hours past their window (ksqlDB's default),
    // then forgotten, each side's by its own time (as Kafka Streams' window store per side):
    // the left two days on, its 40 buffered records are deleted; then the right's.
    let tombstones = || {
        let records = topics.read(&changelog, 0, 0, usize::MAX).unwrap();
        records.iter().filter(|c| c.record.value.is_none()).count() as i64
    };
    put(&topics, "l", Some("other"), Some(r#"{"v": 1}"#), 2 * 86_400_000);
    e.run_until_idle().unwrap();
    assert_eq!(tombstones(), n, "the left's expired records leave the state");
    put(&topics, "r", Some("hot"), Some(r#"{"w": 99}"#), 2 * 86_400_000);
    e.run_until_idle().unwrap();
    assert_eq!(tombstones(), 2 * n, "then the right's");
    assert_eq!(all(&topics, "J").len() as i64, n * n, "nothing old is joined any more");
}

/// A join leaves the VARCHAR columns no stage reads out of the rows it buffers (and so out of
/// its changelog): the output is the same, the state smaller.
#[test]
fn a_join_buffers_no_string_it_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (topics, mut e) = restoring_engine(dir.path());
    e.execute(
        "CREATE STREAM l (k STRING KEY, v INT, pad VARCHAR, tag VARCHAR) WITH (kafka_topic='l', value_format='JSON', partitions=1);
         CREATE TABLE r (k STRING PRIMARY KEY, name VARCHAR, pad VARCHAR) WITH (kafka_topic='r', value_format='JSON', partitions=1);
         CREATE STREAM j AS SELECT l.k AS k, v, name FROM l JOIN r ON l.k = r.k WHERE tag = 'yes';",
    )
    .unwrap();
    put(&topics, "r", Some("a"), Some(r#"{"name": "Ann", "pad": "RIGHT-PADDING"}"#), 1);
    put(&topics, "r", Some("b"), Some(r#"{"name": "Bob", "pad": "RIGHT-PADDING"}"#), 2);
    put(&topics, "l", Some("a"), Some(r#"{"v": 1, "pad": "LEFT-PADDING", "tag": "yes"}"#), 3);
    put(&topics, "l", Some("b"), Some(r#"{"v": 2, "pad": "LEFT-PADDING", "tag": "no"}"#), 4);
    put(&topics, "l", Some("b"), Some(r#"{"v": 3, "pad": 17, "tag": "yes"}"#), 5);
    e.run_until_idle().unwrap();
    let out: Vec<_> = all(&topics, "J").into_iter().map(|(k, v, _)| (k.unwrap(), v.unwrap())).collect();
    assert_eq!(
        out,
        vec![("a".to_string(), r#"{"V":1,"NAME":"Ann"}"#.to_string()), ("b".into(), r#"{"V":3,"NAME":"Bob"}"#.into())]
    );
    let changelog = topics.list_topics().into_iter().find(|t| t.ends_with("-changelog")).expect("a changelog");
    let records = topics.read(&changelog, 0, 0, usize::MAX).unwrap();
    assert!(records.iter().any(|c| c.record.value.as_ref().is_some_and(|v| v.windows(3).any(|w| w == b"Bob"))));
    for c in records {
        let value = c.record.value.unwrap_or_default();
        assert!(!value.windows(7).any(|w| w == b"PADDING"), "an unread column in the state: {value:?}");
    }
}

/// WHERE's conjuncts on one side of a stream-stream inner join are applied before that side's
/// records are buffered: the same output, and rejected records take no state.
#[test]
fn one_sided_where_conjuncts_filter_a_stream_stream_join_before_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let (topics, mut e) = join_engine(dir.path(), "WHERE v > 1 AND (w < 10 OR w IS NULL) AND v + w = 12");
    for (k, v, ts) in [("a", 0, 1), ("a", 5, 2), ("b", 7, 3)] {
        put(&topics, "l", Some(k), Some(&format!(r#"{{"v": {v}}}"#)), ts);
    }
    for (k, w, ts) in [("a", 7, 4), ("a", 20, 5), ("b", 5, 6), ("b", 6, 7)] {
        put(&topics, "r", Some(k), Some(&format!(r#"{{"w": {w}}}"#)), ts);
    }
    e.run_until_idle().unwrap();
    let out: Vec<_> = all(&topics, "J").into_iter().map(|(k, v, _)| (k.unwrap(), v.unwrap())).collect();
    assert_eq!(out, [("a".to_string(), r#"{"V":5,"W":7}"#.to_string()), ("b".into(), r#"{"V":7,"W":5}"#.into())]);
    // Buffered: v=5, v=7, w=7, w=5, w=6 (v + w = 12 needs both sides: it stays above the join).
    let changelog = topics.list_topics().into_iter().find(|t| t.ends_with("-changelog")).expect("a changelog");
    let entries = topics.read(&changelog, 0, 0, usize::MAX).unwrap();
    // The buffers' namespaces are 128 (left) and 129 (right) for the first join stage.
    let buffered = entries.iter().filter(|c| c.record.key.as_ref().is_some_and(|k| k[0] >= 128)).count();
    assert_eq!(buffered, 5);
}

/// A foreign-key join finds the left rows that reference a changed right row through an index
/// kept as left rows arrive, move to another key and leave.
#[test]
fn a_foreign_key_join_updates_exactly_the_rows_that_reference_a_changed_key() {
    let dir = tempfile::tempdir().unwrap();
    let (topics, mut e) = restoring_engine(dir.path());
    e.execute(
        "CREATE TABLE customers (id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='c', value_format='JSON', partitions=1);
         CREATE TABLE orders (id STRING PRIMARY KEY, cust STRING, amount INT) WITH (kafka_topic='o', value_format='JSON', partitions=1);
         CREATE TABLE enriched AS SELECT o.id AS id, cust, amount, name FROM orders o JOIN customers c ON o.cust = c.id;",
    )
    .unwrap();
    let customer =
        |id: &str, name: &str, ts| put(&topics, "c", Some(id), Some(&format!(r#"{{"name": "{name}"}}"#)), ts);
    let order = |id: &str, cust: &str, ts| {
        put(&topics, "o", Some(id), Some(&format!(r#"{{"cust": "{cust}", "amount": 1}}"#)), ts)
    };
    let mut seen = 0;
    let mut new_outputs = |e: &mut Engine| {
        e.run_until_idle().unwrap();
        let out = all(&topics, "ENRICHED");
        let new: Vec<(String, Option<String>)> =
            out[seen..].iter().map(|(k, v, _)| (k.clone().unwrap(), v.clone())).collect();
        seen = out.len();
        new
    };
    customer("a", "Ann", 1);
    customer("b", "Bob", 2);
    order("o1", "a", 3);
    order("o2", "a", 4);
    order("o3", "b", 5);
    assert_eq!(new_outputs(&mut e).len(), 3);
    order("o2", "b", 6);
    let moved = new_outputs(&mut e);
    assert_eq!(moved.len(), 1);
    assert!(moved[0].1.as_deref().unwrap().contains("Bob"), "{moved:?}");
    customer("a", "Anna", 7);
    let renamed: Vec<String> = new_outputs(&mut e).into_iter().map(|(k, _)| k).collect();
    assert_eq!(renamed, ["o1"], "o2 no longer references a");
    put(&topics, "o", Some("o3"), None, 8);
    assert_eq!(new_outputs(&mut e), [("o3".to_string(), None)], "a deleted order is retracted");
    customer("b", "Bobby", 9);
    let renamed = new_outputs(&mut e);
    assert_eq!(renamed.len(), 1, "{renamed:?}");
    assert_eq!(renamed[0].0, "o2");
    assert!(renamed[0].1.as_deref().unwrap().contains("Bobby"));
}

/// Join stages take namespaces of the query's state store: a query joining more sources than
/// they leave room for is refused, with the limit named.
#[test]
fn a_query_joining_too_many_sources_is_refused() {
    let (_topics, mut e) = engine();
    let joins: String = (1..=33).map(|i| format!(" JOIN s{i} WITHIN 1 HOUR ON s0.k = s{i}.k")).collect();
    let err = e.execute(&format!("CREATE STREAM o AS SELECT * FROM s0{joins};")).unwrap_err();
    assert!(err.to_string().contains("at most 32 sources"), "{err}");
}

/// The latest value per key of every partition of `topic`.
fn latest(topics: &MemTopics, topic: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for p in 0..topics.partitions(topic).unwrap() {
        for c in topics.read(topic, p, 0, usize::MAX).unwrap() {
            let k = String::from_utf8(c.record.key.unwrap().to_vec()).unwrap();
            out.insert(k, String::from_utf8(c.record.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

/// Every record of every partition of `topic` (key, value), sorted.
fn every_record(topics: &MemTopics, topic: &str) -> Vec<(String, Option<String>)> {
    let mut out = vec![];
    for p in 0..topics.partitions(topic).unwrap() {
        for c in topics.read(topic, p, 0, usize::MAX).unwrap() {
            let k = String::from_utf8(c.record.key.unwrap().to_vec()).unwrap();
            out.push((k, c.record.value.map(|v| String::from_utf8(v.to_vec()).unwrap())));
        }
    }
    out.sort();
    out
}

/// Runs query `id` split into tasks, as the server does: the repartition stage per input
/// partition of each input (when it has one), then one task per partition, each with its own
/// state; returns how it split.
fn run_split(topics: &Arc<MemTopics>, e: &Engine, id: &str) -> freshet_sql::query::Split {
    use freshet_sql::query::{repartition_topic, Split};
    let template = &e.queries[id];
    let split = template.stateful_split().expect("the query splits");
    let dyn_topics: Arc<dyn Topics> = topics.clone();
    let inputs: Vec<String> =
        std::iter::once(&template.input).chain(&template.rights).map(|s| s.topic.clone()).collect();
    let n = inputs.iter().map(|t| topics.partitions(t).unwrap()).max().unwrap();
    let mut errors = vec![];
    let read = match split {
        Split::ByInputKey => inputs.clone(),
        Split::Repartition | Split::Levels => (0..inputs.len())
            .map(|i| {
                let r = repartition_topic(id, i);
                topics.create_topic(&r, n).unwrap();
                for p in 0..topics.partitions(&inputs[i]).unwrap() {
                    let mut stage = template.repartition_stage(i, p, n, format!("{id}#r{p}"));
                    while stage.step(&dyn_topics, &mut errors).unwrap() > 0 {}
                }
                r
            })
            .collect(),
    };
    if split == Split::Levels {
        // Each join level's tasks send joined rows on to the next level's (or to the
        // aggregating tasks).
        use freshet_sql::query::joined_topic;
        let (levels, apart) = template.join_levels();
        for (level, range) in levels.iter().enumerate() {
            if level + 1 < levels.len() || apart {
                topics.create_topic(&joined_topic(id, level + 1), n).unwrap();
            }
            let left = if level == 0 { read[0].clone() } else { joined_topic(id, level) };
            let level_topics: Vec<String> =
                std::iter::once(left).chain(range.clone().map(|stage| read[stage + 1].clone())).collect();
            for p in 0..n {
                let mut task = template.level_task(level, &level_topics, p, n, format!("{id}#j{level}-{p}"));
                while task.step(&dyn_topics, &mut errors).unwrap() > 0 {}
            }
        }
        if apart {
            for p in 0..n {
                let mut task = template.aggregate_task(p, format!("{id}#{p}"));
                while task.step(&dyn_topics, &mut errors).unwrap() > 0 {}
            }
        }
        assert!(errors.is_empty(), "{errors:?}");
        return split;
    }
    for p in 0..n {
        let mut task = template.partition_task(&read, p, format!("{id}#{p}"));
        while task.step(&dyn_topics, &mut errors).unwrap() > 0 {}
        // Each task read only its partition, of every input.
        for (i, offsets) in task.positions().iter().enumerate() {
            let others = offsets.iter().enumerate().filter(|(q, o)| *q != p as usize && **o > 0).count();
            assert_eq!(others, 0, "input {i} of task {p}");
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    split
}

#[test]
fn an_aggregation_split_by_partition_gives_what_the_whole_query_gives() {
    use freshet_sql::query::Split;
    for (group_by, expected_split) in [("page", Split::Repartition), ("user", Split::ByInputKey)] {
        let (topics, mut e) = engine();
        e.execute(&format!(
            "CREATE STREAM clicks (user VARCHAR KEY, page VARCHAR, ms INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=4);
             CREATE TABLE per_group AS SELECT {group_by}, COUNT(*) AS n, SUM(ms) AS total FROM clicks WHERE ms > 0 GROUP BY {group_by};"
        ))
        .unwrap();
        let id = e.queries.keys().next().unwrap().clone();
        for i in 0..400i64 {
            let user = format!("u{}", i % 13);
            let record = Record {
                key: Some(user.clone().into_bytes().into()),
                value: Some(format!(r#"{{"page":"p{}","ms":{}}}"#, i % 7, i % 5).into_bytes().into()),
                timestamp: i,
                headers: vec![],
            };
            let p = freshet_common::partitioner::partition_for_key(user.as_bytes(), 4);
            topics.append("clicks", p, vec![record]).unwrap();
        }
        assert_eq!(run_split(&topics, &e, &id), expected_split);
        let split = latest(&topics, "PER_GROUP");
        // The same statement run whole over the same input.
        topics.delete_topic("PER_GROUP").unwrap();
        topics.create_topic("PER_GROUP", 4).unwrap();
        e.run_until_idle().unwrap();
        let whole = latest(&topics, "PER_GROUP");
        assert_eq!(split, whole, "GROUP BY {group_by}");
        let expected_groups = if group_by == "page" { 7 } else { 13 };
        assert_eq!(whole.len(), expected_groups);
        let total: i64 = whole
            .values()
            .map(|v| v.split(r#""N":"#).nth(1).unwrap().split(',').next().unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(total, 320, "records with ms > 0");
    }
}

/// A table regrouped by a value column: rows move between groups (and partitions), leave
/// (tombstones, rows WHERE rejects) and come back; split, each group's task must take back the
/// old row's contribution, so the result equals the whole query's.
#[test]
fn a_regrouped_table_split_by_partition_gives_what_the_whole_query_gives() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE TABLE accounts (id VARCHAR PRIMARY KEY, region VARCHAR, balance INT) WITH (kafka_topic='accounts', value_format='JSON', partitions=4);
         CREATE TABLE per_region AS SELECT region, COUNT(*) AS n, SUM(balance) AS total FROM accounts WHERE balance >= 0 GROUP BY region;",
    )
    .unwrap();
    let id = e.queries.keys().next().unwrap().clone();
    let mut expected: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    for i in 0..600i64 {
        let account = format!("a{}", i % 37);
        // Every fifth write deletes the row, every seventh one sets a negative balance (WHERE
        // rejects it: the row leaves its group).
        let value = if i % 5 == 4 {
            expected.remove(&account);
            None
        } else {
            let (region, balance) = (format!("r{}", (i * 7) % 11), if i % 7 == 3 { -1 } else { i % 100 });
            if balance >= 0 {
                expected.insert(account.clone(), (region.clone(), balance));
            } else {
                expected.remove(&account);
            }
            Some(format!(r#"{{"region":"{region}","balance":{balance}}}"#).into_bytes().into())
        };
        let record = Record { key: Some(account.clone().into_bytes().into()), value, timestamp: i, headers: vec![] };
        let p = freshet_common::partitioner::partition_for_key(account.as_bytes(), 4);
        topics.append("accounts", p, vec![record]).unwrap();
    }
    assert_eq!(run_split(&topics, &e, &id), freshet_sql::query::Split::Repartition);
    let split = latest(&topics, "PER_REGION");
    topics.delete_topic("PER_REGION").unwrap();
    topics.create_topic("PER_REGION", 4).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(split, latest(&topics, "PER_REGION"));
    // And both are what the final rows give (a group emptied shows a count of 0).
    let mut totals: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (region, balance) in expected.values() {
        let t = totals.entry(region.clone()).or_default();
        t.0 += 1;
        t.1 += balance;
    }
    for (region, value) in &split {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let (n, total) = totals.get(region).copied().unwrap_or((0, 0));
        assert_eq!((v["N"].as_i64().unwrap(), v["TOTAL"].as_i64().unwrap_or(0)), (n, total), "{region}: {value}");
    }
    assert!(totals.keys().all(|r| split.contains_key(r)));
}

#[test]
fn aggregations_that_cannot_split_run_whole() {
    let (_topics, mut e) = engine();
    e.execute(
        "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=2);
         CREATE TABLE t (k VARCHAR PRIMARY KEY, g VARCHAR, v INT) WITH (kafka_topic='t', value_format='JSON', partitions=2);
         CREATE TABLE by_partition AS SELECT ROWPARTITION AS p, COUNT(*) AS n FROM s GROUP BY ROWPARTITION;
         CREATE TABLE regrouped AS SELECT g, SUM(v) AS total FROM t GROUP BY g;
         CREATE TABLE by_key AS SELECT k, SUM(v) AS total FROM t GROUP BY k;
         CREATE STREAM projected AS SELECT k, v FROM s;",
    )
    .unwrap();
    let split: std::collections::BTreeMap<String, Option<freshet_sql::query::Split>> =
        e.queries.values().map(|q| (q.sink.clone(), q.stateful_split())).collect();
    let by_key = Some(freshet_sql::query::Split::ByInputKey);
    let regrouped = Some(freshet_sql::query::Split::Repartition);
    let expected = [("BY_KEY", by_key), ("BY_PARTITION", None), ("PROJECTED", None), ("REGROUPED", regrouped)];
    assert_eq!(split, expected.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
}

#[test]
fn a_join_split_by_partition_gives_what_the_whole_query_gives() {
    for (shape, ddl) in [
        ("stream-table", "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=3);"),
        ("table-table", "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=3);"),
    ] {
        let (topics, mut e) = engine();
        let left = if shape == "stream-table" {
            "CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR, page VARCHAR) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);
             CREATE STREAM out AS SELECT c.user AS user, u.name AS name, c.page AS page FROM clicks c JOIN users u ON c.user = u.id;"
        } else {
            "CREATE TABLE clicks (k VARCHAR PRIMARY KEY, user VARCHAR, page VARCHAR) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);
             CREATE TABLE out AS SELECT c.k AS k, u.name AS name, c.page AS page FROM clicks c JOIN users u ON c.k = u.id;"
        };
        e.execute(&format!("{ddl}\n{left}")).unwrap();
        let id = e.queries.keys().next().unwrap().clone();
        let record = |key: &str, value: Option<String>, ts: i64| Record {
            key: Some(key.to_string().into_bytes().into()),
            value: value.map(|v| v.into_bytes().into()),
            timestamp: ts,
            headers: vec![],
        };
        // Users first (older), then clicks, one user renamed and one deleted in between.
        for i in 0..20i64 {
            let id = format!("u{i}");
            let p = freshet_common::partitioner::partition_for_key(id.as_bytes(), 3);
            topics.append("users", p, vec![record(&id, Some(format!(r#"{{"name":"n{i}"}}"#)), i)]).unwrap();
        }
        // (In u3's partition: a key's records are in order in one partition only.)
        let p3 = freshet_common::partitioner::partition_for_key(b"u3", 3);
        topics.append("users", p3, vec![record("u3", None, 25)]).unwrap();
        for i in 0..300i64 {
            let (k, user) = if shape == "stream-table" { (format!("c{i}"), format!("u{}", i % 23)) } else { (format!("u{}", i % 23), String::new()) };
            let p = freshet_common::partitioner::partition_for_key(k.as_bytes(), 3);
            let value = format!(r#"{{"user":"{user}","page":"p{i}"}}"#);
            topics.append("clicks", p, vec![record(&k, Some(value), 100 + i)]).unwrap();
        }
        assert_eq!(run_split(&topics, &e, &id), freshet_sql::query::Split::Repartition, "{shape}");
        let split = every_record(&topics, "OUT");
        topics.delete_topic("OUT").unwrap();
        topics.create_topic("OUT", 3).unwrap();
        e.run_until_idle().unwrap();
        let whole = every_record(&topics, "OUT");
        let differ: Vec<_> = split.iter().filter(|r| !whole.contains(r)).chain(whole.iter().filter(|r| !split.contains(r))).take(5).collect();
        assert!(split == whole, "{shape}: {} vs {} records, e.g. {differ:?}", split.len(), whole.len());
        // Users u0..u19 but u3 exist: the clicks of u3 and u20..u22 join nothing.
        let joined = (0..300).filter(|i| ![3, 20, 21, 22].contains(&(i % 23))).count();
        if shape == "stream-table" {
            assert_eq!(whole.len(), joined);
        } else {
            let keys: std::collections::BTreeSet<&String> = whole.iter().map(|(k, _)| k).collect();
            assert_eq!(keys.len(), 19, "table-table: the keys that ever joined");
        }
    }
}

#[test]
fn a_stream_stream_join_split_by_partition_filters_before_repartitioning() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR, page INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);
         CREATE STREAM views (k VARCHAR KEY, user VARCHAR, secs INT) WITH (kafka_topic='views', value_format='JSON', partitions=3);
         CREATE STREAM out AS SELECT c.user AS user, c.page AS page, v.secs AS secs
             FROM clicks c JOIN views v WITHIN 10 SECONDS ON c.user = v.user WHERE c.page > 99 AND v.secs > 3;",
    )
    .unwrap();
    let id = e.queries.keys().next().unwrap().clone();
    let record = |key: String, value: String, ts: i64| Record {
        key: Some(key.into_bytes().into()),
        value: Some(value.into_bytes().into()),
        timestamp: ts,
        headers: vec![],
    };
    for i in 0..200i64 {
        let (k, user) = (format!("k{i}"), format!("u{}", i % 7));
        let p = freshet_common::partitioner::partition_for_key(k.as_bytes(), 3);
        let click = format!(r#"{{"user":"{user}","page":{i}}}"#);
        topics.append("clicks", p, vec![record(k.clone(), click, i * 1000)]).unwrap();
        let view = format!(r#"{{"user":"{user}","secs":{}}}"#, i % 6);
        topics.append("views", (p + 1) % 3, vec![record(k, view, i * 1000 + 500)]).unwrap();
    }
    assert_eq!(run_split(&topics, &e, &id), freshet_sql::query::Split::Repartition);
    // WHERE's one-sided conjuncts were applied before the repartition: only clicks on pages
    // above 99 and views of more than 3 seconds travelled.
    let travelled =
        |topic: &str| -> usize { (0..3).map(|p| topics.read(topic, p, 0, usize::MAX).unwrap().len()).sum() };
    assert_eq!(travelled(&freshet_sql::query::repartition_topic(&id, 0)), 100);
    assert_eq!(travelled(&freshet_sql::query::repartition_topic(&id, 1)), (0..200).filter(|i| i % 6 > 3).count());
    let split = every_record(&topics, "OUT");
    topics.delete_topic("OUT").unwrap();
    topics.create_topic("OUT", 3).unwrap();
    e.run_until_idle().unwrap();
    let whole = every_record(&topics, "OUT");
    assert!(!whole.is_empty());
    assert!(split == whole, "{} vs {} records", split.len(), whole.len());
}

#[test]
fn an_aggregation_of_a_join_counts_the_joined_rows() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE TABLE users (id VARCHAR PRIMARY KEY, city VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=1);
         CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR) WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
         CREATE TABLE per_city AS SELECT u.city AS city, COUNT(*) AS n FROM clicks c JOIN users u ON c.user = u.id
             WHERE c.k <> 'skip' GROUP BY u.city;",
    )
    .unwrap();
    put(&topics, "users", Some("u1"), Some(r#"{"city":"Oslo"}"#), 0);
    put(&topics, "users", Some("u2"), Some(r#"{"city":"Paris"}"#), 0);
    put(&topics, "users", Some("u3"), Some(r#"{"city":"Oslo"}"#), 0);
    for (i, (k, user)) in
        [("a", "u1"), ("b", "u2"), ("c", "u3"), ("skip", "u1"), ("d", "nobody"), ("e", "u1")].iter().enumerate()
    {
        put(&topics, "clicks", Some(k), Some(&format!(r#"{{"user":"{user}"}}"#)), 1 + i as i64);
    }
    e.run_until_idle().unwrap();
    // Oslo: a (u1), c (u3), e (u1); Paris: b. "skip" is filtered, "nobody" joins nothing.
    assert_eq!(
        latest(&topics, "PER_CITY"),
        [("Oslo", r#"{"N":3}"#), ("Paris", r#"{"N":1}"#)].map(|(k, v)| (k.to_string(), v.to_string())).into()
    );
    // A join of tables is a table: a key's change moves its contribution.
    e.execute(
        "CREATE TABLE accounts (id VARCHAR PRIMARY KEY, balance INT) WITH (kafka_topic='accounts', value_format='JSON', partitions=1);
         CREATE TABLE balances AS SELECT u.city AS city, SUM(a.balance) AS total, COUNT(*) AS n
             FROM users u JOIN accounts a ON u.id = a.id GROUP BY u.city;",
    )
    .unwrap();
    put(&topics, "accounts", Some("u1"), Some(r#"{"balance":10}"#), 10);
    put(&topics, "accounts", Some("u2"), Some(r#"{"balance":20}"#), 11);
    put(&topics, "accounts", Some("u3"), Some(r#"{"balance":30}"#), 12);
    e.run_until_idle().unwrap();
    let totals = |t: &[(&str, &str)]| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let want = totals(&[("Oslo", r#"{"TOTAL":40,"N":2}"#), ("Paris", r#"{"TOTAL":20,"N":1}"#)]);
    assert_eq!(latest(&topics, "BALANCES"), want);
    // u3 moves to Paris, u1's account closes.
    put(&topics, "users", Some("u3"), Some(r#"{"city":"Paris"}"#), 13);
    put(&topics, "accounts", Some("u1"), None, 14);
    e.run_until_idle().unwrap();
    let want = totals(&[("Oslo", r#"{"TOTAL":0,"N":0}"#), ("Paris", r#"{"TOTAL":50,"N":2}"#)]);
    assert_eq!(latest(&topics, "BALANCES"), want);
}

#[test]
fn repartition_topic_names_are_recognized_per_query() {
    use freshet_sql::query::{is_repartition_topic, repartition_topic};
    for input in [0, 1, 12] {
        assert!(is_repartition_topic(&repartition_topic("CTAS_X_1", input), "CTAS_X_1"));
        assert!(!is_repartition_topic(&repartition_topic("CTAS_X_10", input), "CTAS_X_1"));
    }
    assert!(!is_repartition_topic("_freshet_sql_CTAS_X_1-changelog", "CTAS_X_1"));
    assert!(!is_repartition_topic("_freshet_sql_CTAS_X_1-repartition-x", "CTAS_X_1"));
    assert!(!is_repartition_topic("_freshet_sql_CTAS_X_1-repartition-changelog", "CTAS_X_1"));
}

/// A join aggregated by one of its join columns splits as the join does: each group has one
/// join key, so the task that owns the key owns the group. Grouped otherwise, its join tasks
/// send the joined rows on by group key to the tasks that aggregate them (taking a row back
/// from its old group's task when a join of tables changes it).
#[test]
fn an_aggregated_join_splits_by_its_join_key_or_through_a_second_repartition() {
    for (shape, left) in [
        ("stream-table", "CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR, ms INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);"),
        ("table-table", "CREATE TABLE clicks (k VARCHAR PRIMARY KEY, user VARCHAR, ms INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);"),
    ] {
        let (topics, mut e) = engine();
        let (on, by) = if shape == "stream-table" { ("c.user = u.id", "u.id") } else { ("c.k = u.id", "c.k") };
        e.execute(&format!(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, city VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=3);
             {left}
             CREATE TABLE per_city AS SELECT u.city AS city, COUNT(*) AS n FROM clicks c JOIN users u ON {on} GROUP BY u.city;
             CREATE TABLE per_user AS SELECT {by} AS id, COUNT(*) AS n, SUM(c.ms) AS total FROM clicks c JOIN users u ON {on} GROUP BY {by};",
        ))
        .unwrap();
        let split: std::collections::BTreeMap<String, Option<freshet_sql::query::Split>> =
            e.queries.values().map(|q| (q.sink.clone(), q.stateful_split())).collect();
        assert_eq!(split["PER_CITY"], Some(freshet_sql::query::Split::Levels), "{shape}");
        assert_eq!(split["PER_USER"], Some(freshet_sql::query::Split::Repartition), "{shape}");
        let record = |key: &str, value: Option<String>, ts: i64| Record {
            key: Some(key.to_string().into_bytes().into()),
            value: value.map(|v| v.into_bytes().into()),
            timestamp: ts,
            headers: vec![],
        };
        let send = |topic: &str, key: &str, value: Option<String>, ts: i64| {
            let p = freshet_common::partitioner::partition_for_key(key.as_bytes(), 3);
            topics.append(topic, p, vec![record(key, value, ts)]).unwrap();
        };
        for i in 0..30i64 {
            send("users", &format!("u{i}"), Some(format!(r#"{{"city":"c{}"}}"#, i % 4)), i);
        }
        for i in 0..500i64 {
            let (k, user) = if shape == "stream-table" { (format!("k{i}"), format!("u{}", i % 37)) } else { (format!("u{}", i % 37), String::new()) };
            let value = (i % 9 != 4).then(|| format!(r#"{{"user":"{user}","ms":{}}}"#, i % 10));
            send("clicks", &k, value, 100 + i);
            // A table's changes while the other side flows: the repartition topics interleave
            // their input partitions out of time order (as Kafka Streams' do), so which stream
            // records see them would not be the whole query's; between tables the final state
            // is the same.
            if i % 50 == 0 && shape == "table-table" {
                send("users", &format!("u{}", i % 30), None, 100 + i);
            }
            // Users move to another city: their joined rows move to another group.
            if i % 7 == 0 && shape == "table-table" {
                let city = format!(r#"{{"city":"c{}"}}"#, (i / 7) % 5);
                send("users", &format!("u{}", (i / 7) % 30), Some(city), 100 + i);
            }
        }
        let mut split_runs = std::collections::BTreeMap::new();
        for sink in ["PER_USER", "PER_CITY"] {
            let id = e.queries.values().find(|q| q.sink == sink).unwrap().id.clone();
            run_split(&topics, &e, &id);
            split_runs.insert(sink, (every_record(&topics, sink), latest_or_deleted(&topics, sink)));
            topics.delete_topic(sink).unwrap();
            topics.create_topic(sink, 3).unwrap();
        }
        e.run_until_idle().unwrap();
        // Groups emptied show a count of 0, or never appear when the order of the repartition
        // topic had the row deleted before it joined: the same rows counted either way.
        let counted = |mut m: std::collections::BTreeMap<String, Option<String>>| {
            m.retain(|_, v| v.as_deref().is_some_and(|v| !v.contains(r#""N":0"#)));
            m
        };
        for (sink, (split, split_latest)) in split_runs {
            let whole = counted(latest_or_deleted(&topics, sink));
            assert_eq!(counted(split_latest), whole, "{shape}: {sink}");
            assert!(whole.len() >= 4, "{shape}: {sink}: {whole:?}");
            if shape == "stream-table" {
                // One change per joined click either way (their order within a group is the
                // repartition topic's interleaving of the input partitions, not the whole
                // query's).
                assert_eq!(split.len(), every_record(&topics, sink).len(), "{shape}: {sink}: as many changes");
            }
        }
    }
}

/// The latest value per key of every partition of `topic`, `None` for a tombstone.
fn latest_or_deleted(topics: &MemTopics, topic: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let mut out = std::collections::BTreeMap::new();
    for p in 0..topics.partitions(topic).unwrap() {
        for c in topics.read(topic, p, 0, usize::MAX).unwrap() {
            let k = String::from_utf8(c.record.key.unwrap().to_vec()).unwrap();
            out.insert(k, c.record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()));
        }
    }
    out
}

/// A join of three inputs splits when every stage matches on the same key (here a user id,
/// reached through the stream's column, then the first table's key): each input is
/// repartitioned by its own join column. A third input joined on another column splits in
/// levels: the first join's tasks send the joined rows on, by the next join column, to the
/// second join's; aggregated by another column, a third level of tasks aggregates.
#[test]
fn three_way_joins_split_on_one_key_or_in_levels() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR, item VARCHAR) WITH (kafka_topic='clicks', value_format='JSON', partitions=3);
         CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=3);
         CREATE TABLE prefs (id VARCHAR PRIMARY KEY, color VARCHAR) WITH (kafka_topic='prefs', value_format='JSON', partitions=3);
         CREATE TABLE items (id VARCHAR PRIMARY KEY, price INT) WITH (kafka_topic='items', value_format='JSON', partitions=3);
         CREATE STREAM on_items AS SELECT c.item AS item, c.k AS k, u.name AS name, i.price AS price
             FROM clicks c JOIN users u ON c.user = u.id LEFT JOIN items i ON c.item = i.id;
         CREATE TABLE per_item AS SELECT i.id AS item, COUNT(*) AS n, SUM(i.price) AS total
             FROM clicks c JOIN users u ON c.user = u.id JOIN items i ON c.item = i.id GROUP BY i.id;
         CREATE TABLE per_name AS SELECT u.name AS name, COUNT(*) AS n, SUM(i.price) AS total
             FROM clicks c JOIN users u ON c.user = u.id JOIN items i ON c.item = i.id GROUP BY u.name;
         CREATE TABLE per_user AS SELECT u.id AS id, COUNT(*) AS n
             FROM clicks c JOIN users u ON c.user = u.id LEFT JOIN prefs p ON u.id = p.id GROUP BY u.id;
         CREATE STREAM enriched AS SELECT u.id AS id, c.k AS k, u.name AS name, p.color AS color
             FROM clicks c JOIN users u ON c.user = u.id LEFT JOIN prefs p ON u.id = p.id;",
    )
    .unwrap();
    use freshet_sql::query::Split;
    let split: std::collections::BTreeMap<String, Option<Split>> =
        e.queries.values().map(|q| (q.sink.clone(), q.stateful_split())).collect();
    for (sink, expected) in [
        ("ENRICHED", Split::Repartition),
        ("PER_USER", Split::Repartition),
        ("ON_ITEMS", Split::Levels),
        ("PER_ITEM", Split::Levels),
        ("PER_NAME", Split::Levels),
    ] {
        assert_eq!(split[sink], Some(expected), "{sink}");
    }
    let levels = |sink: &str| e.queries.values().find(|q| q.sink == sink).unwrap().join_levels();
    assert_eq!(levels("ON_ITEMS"), (vec![0..1, 1..2], false));
    assert_eq!(levels("PER_ITEM"), (vec![0..1, 1..2], false), "grouped by the last level's key");
    assert_eq!(levels("PER_NAME"), (vec![0..1, 1..2], true), "grouped apart");
    let send = |topic: &str, key: &str, value: String, ts: i64| {
        let p = freshet_common::partitioner::partition_for_key(key.as_bytes(), 3);
        let record = Record {
            key: Some(key.as_bytes().to_vec().into()),
            value: Some(value.into_bytes().into()),
            timestamp: ts,
            headers: vec![],
        };
        topics.append(topic, p, vec![record]).unwrap();
    };
    for i in 0..20i64 {
        send("users", &format!("u{i}"), format!(r#"{{"name":"n{}"}}"#, i % 6), i);
        if i % 3 != 0 {
            send("prefs", &format!("u{i}"), format!(r#"{{"color":"c{i}"}}"#), i);
        }
        if i % 4 != 0 {
            send("items", &format!("x{i}"), format!(r#"{{"price":{}}}"#, 10 * i), i);
        }
    }
    for i in 0..300i64 {
        send("clicks", &format!("k{i}"), format!(r#"{{"user":"u{}","item":"x{}"}}"#, i % 23, i % 17), 100 + i);
    }
    let sinks = ["ENRICHED", "ON_ITEMS", "PER_ITEM", "PER_NAME"];
    let mut split_runs = std::collections::BTreeMap::new();
    for sink in sinks {
        let id = e.queries.values().find(|q| q.sink == sink).unwrap().id.clone();
        run_split(&topics, &e, &id);
        split_runs.insert(sink, (every_record(&topics, sink), latest(&topics, sink)));
        topics.delete_topic(sink).unwrap();
        topics.create_topic(sink, 3).unwrap();
    }
    e.run_until_idle().unwrap();
    for sink in ["ENRICHED", "ON_ITEMS"] {
        assert_eq!(split_runs[sink].0, every_record(&topics, sink), "{sink}");
    }
    for sink in ["PER_ITEM", "PER_NAME"] {
        // The same totals; the changes on the way depend on the order of the repartition
        // topics' records.
        assert_eq!(split_runs[sink].1, latest(&topics, sink), "{sink}");
    }
    // Clicks of u0..u19 joined; a color for those not a multiple of 3.
    let whole = every_record(&topics, "ENRICHED");
    assert_eq!(whole.len(), (0..300).filter(|i| i % 23 < 20).count());
    let colored = whole.iter().filter(|(_, v)| v.as_deref().is_some_and(|v| v.contains(r#""COLOR":"c"#))).count();
    assert_eq!(colored, (0..300).filter(|i| i % 23 < 20 && (i % 23) % 3 != 0).count());
    // The same clicks, priced when their item exists.
    let on_items = every_record(&topics, "ON_ITEMS");
    assert_eq!(on_items.len(), whole.len());
    let priced = on_items.iter().filter(|(_, v)| v.as_deref().is_some_and(|v| !v.contains(r#""PRICE":null"#))).count();
    assert_eq!(priced, (0..300).filter(|i| i % 23 < 20 && (i % 17) % 4 != 0 && i % 17 < 20).count());
    let per_name = latest(&topics, "PER_NAME");
    let counted: i64 =
        per_name.values().map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap()["N"].as_i64().unwrap()).sum();
    assert_eq!(counted as usize, priced, "every priced click counted once, by name");
}

/// A table larger than a read batch, older than the stream joined to it: the step ends when
/// the table's partition runs out of what was read of it, so no stream record is joined
/// before the older table rows are in (one step would otherwise take the stream's records
/// once the first batch of the table's was done).
#[test]
fn a_join_reads_a_backlogged_table_before_the_newer_stream_records() {
    let (topics, mut e) = engine();
    e.execute(
        "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) WITH (kafka_topic='users', value_format='JSON', partitions=1);
         CREATE STREAM clicks (k VARCHAR KEY, user VARCHAR) WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
         CREATE STREAM named AS SELECT c.user AS user, u.name AS name FROM clicks c JOIN users u ON c.user = u.id;",
    )
    .unwrap();
    let users = 3 * freshet_sql::limits::POLL_BATCH as i64;
    for i in 0..users {
        put(&topics, "users", Some(&format!("u{i}")), Some(&format!(r#"{{"name":"n{i}"}}"#)), i);
    }
    for i in 0..500i64 {
        put(
            &topics,
            "clicks",
            Some(&format!("k{i}")),
            Some(&format!(r#"{{"user":"u{}"}}"#, users - 1 - i * 5)),
            users + i,
        );
    }
    e.run_until_idle().unwrap();
    assert_eq!(every_record(&topics, "NAMED").len(), 500, "every click joined");
}
