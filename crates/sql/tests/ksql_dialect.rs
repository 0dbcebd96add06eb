//! ksqlDB dialect details: errors in its words with phase and position, struct projections, names.

use std::sync::Arc;

use freshet_sql::engine::Engine;
use freshet_sql::topics::MemTopics;

fn engine() -> Engine {
    let mut e = Engine::new(Arc::new(MemTopics::new()));
    e.auto_create_topics = true;
    e
}

fn error_of(e: &mut Engine, sql: &str) -> String {
    e.execute(sql).expect_err("the statement should fail").to_string()
}

#[test]
fn delimiters_are_checked_before_the_columns() {
    let mut e = engine();
    let err =
        error_of(&mut e, "CREATE STREAM T WITH (kafka_topic='t', value_format='DELIMITED', value_delimiter=' ');");
    assert!(err.starts_with(
        "Failed to prepare statement: Configuration VALUE_DELIMITER is invalid: Delimiter cannot be empty"
    ));
    let err =
        error_of(&mut e, "CREATE STREAM T WITH (kafka_topic='t', value_format='DELIMITED', value_delimiter='ab');");
    assert!(err.contains("Invalid delimiter value: 'ab'. Delimiter must be a single character or TAB,SPACE"));
    let err = error_of(&mut e, "CREATE STREAM T WITH (kafka_topic='t', value_format='JSON', value_delimiter='|');");
    assert_eq!(err, "JSON does not support the following configs: [delimiter]");
    e.execute("CREATE STREAM T (A INT) WITH (kafka_topic='t', value_format='DELIMITED', value_delimiter='TAB');")
        .unwrap();
}

#[test]
fn join_columns_name_their_candidates_and_position() {
    let mut e = engine();
    e.execute(
        "CREATE TABLE L (ID BIGINT PRIMARY KEY, F1 BIGINT) WITH (kafka_topic='l', format='JSON');
         CREATE TABLE R (ID BIGINT PRIMARY KEY, F2 BIGINT) WITH (kafka_topic='r', format='JSON');",
    )
    .unwrap();
    let err = error_of(&mut e, "CREATE TABLE O AS SELECT * FROM L JOIN R ON ID = ID;");
    assert_eq!(
        err,
        "Exception while preparing statement: Line: 1, Col: 45: Column 'ID' is ambiguous. Could be L.ID or R.ID."
    );
    // An unknown qualifier is reported first, wherever it is.
    let err = error_of(&mut e, "CREATE TABLE O AS SELECT * FROM L JOIN R ON ID = X.ID;");
    assert_eq!(err, "Failed to prepare statement: 'X' is not a valid stream/table name or alias.");
    let err = error_of(&mut e, "INSERT INTO NOPE SELECT * FROM L;");
    assert_eq!(err, "Line: 1, Col: 13: Source `NOPE` does not exist.");
}

#[test]
fn struct_all_expands_into_the_fields_and_arrow_binds_tightly() {
    use freshet_sql::topics::{Record, Topics};
    let topics = Arc::new(MemTopics::new());
    let mut e = Engine::new(topics.clone());
    e.auto_create_topics = true;
    e.execute(
        "CREATE STREAM I (K INT KEY, V STRUCT<A INT, B ARRAY<INT>>) WITH (kafka_topic='i', format='JSON');
         CREATE STREAM O AS SELECT K, V->*, V->A * 10 AS TEN, V->B[1] AS FIRST FROM I;",
    )
    .unwrap();
    let value = br#"{"V": {"A": 2, "B": [7, 8]}}"#.to_vec();
    topics
        .append(
            "i",
            0,
            vec![Record { key: Some(b"1".to_vec().into()), value: Some(value.into()), timestamp: 0, headers: vec![] }],
        )
        .unwrap();
    e.run_until_idle().unwrap();
    let out = topics.read("O", 0, 0, 10).unwrap();
    assert_eq!(out.len(), 1);
    let v = String::from_utf8(out[0].record.value.clone().unwrap().to_vec()).unwrap();
    assert_eq!(v, r#"{"A":2,"B":[7,8],"TEN":20,"FIRST":7}"#);
    let err = e.execute("CREATE STREAM P AS SELECT K->* FROM I;").unwrap_err().to_string();
    assert!(err.contains("Expected STRUCT type"), "{err}");
}

#[test]
fn field_names_that_clash_get_a_suffix() {
    let mut e = engine();
    e.execute(
        "CREATE STREAM I (B INT, A STRUCT<B INT>, C STRUCT<B INT, X INT>) WITH (kafka_topic='i', value_format='JSON');
         CREATE STREAM O AS SELECT B, A->B, C->B, C->X FROM I;",
    )
    .unwrap();
    let names: Vec<String> = e.catalog.get("O").unwrap().values.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, ["B", "B_1", "B_2", "X"]);
}

#[test]
fn a_sink_timestamp_column_stamps_records_and_negative_ones_are_skipped() {
    use freshet_sql::topics::{Record, Topics};
    let topics = Arc::new(MemTopics::new());
    let mut e = Engine::new(topics.clone());
    e.auto_create_topics = true;
    e.execute(
        "CREATE STREAM I (K STRING KEY, ID BIGINT) WITH (kafka_topic='i', value_format='JSON');
         CREATE STREAM O WITH (timestamp='T') AS SELECT K, ID AS T FROM I;",
    )
    .unwrap();
    for id in [5, -2, 7] {
        let value = format!("{{\"ID\": {id}}}").into_bytes();
        topics
            .append("i", 0, vec![Record { key: None, value: Some(value.into()), timestamp: 1000, headers: vec![] }])
            .unwrap();
    }
    e.run_until_idle().unwrap();
    let stamps: Vec<i64> = topics.read("O", 0, 0, 10).unwrap().iter().map(|c| c.record.timestamp).collect();
    assert_eq!(stamps, [5, 7]);
    let err = e.execute("CREATE STREAM P WITH (timestamp='NOPE') AS SELECT * FROM I;").unwrap_err().to_string();
    assert!(err.contains("does not exist in the schema: 'NOPE'"), "{err}");
}

#[test]
fn alter_adds_columns_except_to_read_only_sources() {
    let mut e = engine();
    e.execute(
        "CREATE STREAM S (K STRING KEY, A INT) WITH (kafka_topic='s', value_format='JSON');
         CREATE SOURCE STREAM R (K STRING KEY, A INT) WITH (kafka_topic='r', value_format='JSON');
         ALTER STREAM S ADD COLUMN B STRING, ADD C INT;",
    )
    .unwrap();
    let names: Vec<String> = e.catalog.get("S").unwrap().values.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, ["A", "B", "C"]);
    let err = error_of(&mut e, "ALTER STREAM S ADD COLUMN A INT;");
    assert!(err.contains("A column with the same name already exists"), "{err}");
    let err = error_of(&mut e, "ALTER STREAM R ADD COLUMN B INT;");
    assert_eq!(err, "Cannot alter stream 'R': ALTER operations are not supported on source streams.");
    let err = error_of(&mut e, "DROP STREAM R DELETE TOPIC;");
    assert_eq!(err, "Cannot delete topic for read-only source: R");
}

#[test]
fn with_both_join_columns_projected_the_left_one_is_the_key() {
    let mut e = engine();
    e.execute(
        "CREATE STREAM L (ID BIGINT KEY, NAME STRING) WITH (kafka_topic='l', value_format='JSON');
         CREATE STREAM R (ID BIGINT KEY, F1 STRING) WITH (kafka_topic='r', value_format='JSON');
         CREATE STREAM J AS SELECT R.*, L.ID FROM L JOIN R WITHIN 10 SECONDS ON R.ID = L.ID;",
    )
    .unwrap();
    let j = e.catalog.get("J").unwrap();
    assert_eq!(j.keys[0].name, "L_ID");
    let values: Vec<&str> = j.values.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(values, ["R_ID", "R_F1"]);
}

#[test]
fn table_functions_under_a_field_access_and_not_with_aggregations() {
    let mut e = engine();
    e.execute(
        "CREATE STREAM S (ID STRING KEY, A ARRAY<STRUCT<F1 BIGINT>>, M MAP<STRING, INT>) WITH (kafka_topic='s', value_format='JSON');
         CREATE STREAM O AS SELECT ID, EXPLODE(A)->F1 AS VAL FROM S;",
    )
    .unwrap();
    assert_eq!(e.catalog.get("O").unwrap().values[0].name, "VAL");
    let err = error_of(&mut e, "CREATE STREAM P AS SELECT EXPLODE(M) FROM S;");
    assert!(err.contains("Function 'explode' does not accept parameters (MAP<STRING, INTEGER>)."), "{err}");
    let err = error_of(&mut e, "CREATE TABLE T AS SELECT ID, EXPLODE(A), COUNT(*) FROM S GROUP BY ID;");
    assert_eq!(err, "Table functions cannot be used with aggregations.");
}

#[test]
fn a_key_column_appears_in_the_projection_once() {
    let mut e = engine();
    e.execute("CREATE STREAM I (ID INT KEY, NAME STRING) WITH (kafka_topic='i', value_format='JSON');").unwrap();
    let err = error_of(&mut e, "CREATE STREAM O AS SELECT NAME, NAME AS NAME2, ID FROM I PARTITION BY NAME;");
    assert_eq!(err, "The projection contains a key column (`NAME`) more than once, aliased as: NAME and NAME2.");
    let err = error_of(&mut e, "CREATE STREAM O WITH (key_format='KAFKA') AS SELECT * FROM I PARTITION BY NULL;");
    assert_eq!(err, "Key format specified for stream without key columns.");
    e.execute("CREATE STREAM P AS SELECT * FROM I PARTITION BY ROWOFFSET;").unwrap();
    assert_eq!(e.catalog.get("P").unwrap().keys[0].name, "ROWOFFSET");
}

#[test]
fn foreign_key_joins_name_qualified_expressions_and_duplicate_keys() {
    let mut e = engine();
    e.execute(
        "CREATE TABLE L (L_ID BIGINT PRIMARY KEY, F1 STRING, FK BIGINT) WITH (kafka_topic='l', value_format='JSON');
         CREATE TABLE R (R_ID BIGINT PRIMARY KEY, F2 BIGINT) WITH (kafka_topic='r', value_format='JSON');",
    )
    .unwrap();
    let err = error_of(&mut e, "CREATE TABLE O AS SELECT L_ID, F1 FROM L JOIN R ON CAST(FK AS STRING) = R_ID;");
    assert!(err.contains("Got CAST(L.FK AS STRING){STRING} = R.R_ID{BIGINT}."), "{err}");
    let err = error_of(&mut e, "CREATE TABLE O AS SELECT L_ID, L_ID AS L2, F2 FROM L JOIN R ON FK = R_ID;");
    assert_eq!(err, "The projection contains a key column (`L_L_ID`) more than once, aliased as: L2 and L_ID.");
}

#[test]
fn join_criteria_reference_the_joined_source_on_one_side() {
    let mut e = engine();
    e.execute(
        "CREATE STREAM S1 (ID INT KEY, V0 BIGINT) WITH (kafka_topic='s1', value_format='JSON');
         CREATE TABLE T2 (ID INT PRIMARY KEY, V0 BIGINT) WITH (kafka_topic='t2', value_format='JSON');
         CREATE TABLE T3 (ID INT PRIMARY KEY, V0 BIGINT) WITH (kafka_topic='t3', value_format='JSON');",
    )
    .unwrap();
    let err =
        error_of(&mut e, "CREATE STREAM O AS SELECT * FROM S1 JOIN T2 ON S1.ID = T2.ID JOIN T3 ON S1.ID = T2.ID;");
    assert!(err.starts_with("A join criteria is expected to reference the source (`T3`)"), "{err}");
    let err =
        error_of(&mut e, "CREATE STREAM O AS SELECT * FROM S1 JOIN T2 ON S1.ID = T2.ID JOIN T3 ON S1.V0 = S1.V0;");
    assert!(err.ends_with("Left side references `S1` and right references `S1`"), "{err}");
    let err =
        error_of(&mut e, "CREATE STREAM O AS SELECT * FROM T2 JOIN T3 ON T2.ID = T3.ID JOIN S1 ON T2.ID = S1.ID;");
    assert!(err.ends_with("Got T2 [INNER] JOIN S1."), "{err}");
}

#[test]
fn double_quoted_names_are_case_sensitive() {
    let mut e = engine();
    e.execute("CREATE STREAM \"input\" (ID INT KEY, VAL STRING) WITH (kafka_topic='t', value_format='JSON');").unwrap();
    assert!(e.catalog.get("input").is_some());
    let err = error_of(&mut e, "INSERT INTO input (ID, VAL) VALUES (1, 'a');");
    assert!(err.ends_with(
        "Cannot insert values into an unknown stream/table: `INPUT`\nDid you mean \"input\"? Hint: wrap the source name in double quotes to make it case-sensitive."
    ));
    e.execute("INSERT INTO \"input\" (ID, VAL) VALUES (1, 'a');").unwrap();
}
