//! Output of the shell: the `/ksql` entities as aligned tables in ksqlDB CLI's layout, and query
//! rows in boxes.

use serde_json::Value as Json;

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(s))));
    out
}

/// A table as ksqlDB's CLI prints listings:
/// ```text
///  Stream Name | Kafka Topic | Key Format
/// ----------------------------------------
///  ORDERS      | orders      | KAFKA
/// ----------------------------------------
/// ```
pub fn listing(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.lines().map(width).max().unwrap_or(0));
        }
    }
    let line = |cells: &[&str]| -> String {
        let parts: Vec<String> = widths.iter().enumerate().map(|(i, w)| pad(cells.get(i).unwrap_or(&""), *w)).collect();
        format!(" {}", parts.join(" | ")).trim_end().to_string()
    };
    let total = widths.iter().sum::<usize>() + 3 * widths.len().saturating_sub(1) + 2;
    let rule = "-".repeat(total);
    let mut out = vec![line(headers), rule.clone()];
    for row in rows {
        // A cell of several lines (a query's text) continues under its column.
        let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = split.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for l in 0..height {
            let cells: Vec<&str> = split.iter().map(|c| *c.get(l).unwrap_or(&"")).collect();
            out.push(line(&cells));
        }
    }
    out.push(rule);
    out.join("\n") + "\n"
}

/// Query rows in boxes, as ksqlDB's CLI prints them: the header (`box_header`), one line per row
/// (`box_row`) as rows arrive, and the closing line (`box_rule`).
pub fn box_rule(widths: &[usize]) -> String {
    let parts: Vec<String> = widths.iter().map(|w| "-".repeat(*w + 2)).collect();
    format!("+{}+", parts.join("+"))
}

pub fn box_row(widths: &[usize], cells: &[String]) -> String {
    let parts: Vec<String> = widths.iter().enumerate().map(|(i, w)| pad(cells.get(i).map_or("", |c| c), *w)).collect();
    format!("| {} |", parts.join(" | "))
}

pub fn box_header(widths: &[usize], columns: &[String]) -> String {
    format!("{}\n{}\n{}", box_rule(widths), box_row(widths, columns), box_rule(widths))
}

/// Column widths for streamed rows, fixed before any row is seen: the name's, at least 12.
pub fn stream_widths(columns: &[String]) -> Vec<usize> {
    columns.iter().map(|c| width(c).max(12)).collect()
}

/// Column widths for rows all known in advance.
pub fn fitted_widths(columns: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = columns.iter().map(|c| width(c)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    widths
}

/// A column value as printed: strings bare, everything else as JSON.
pub fn cell(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The column names of a `/query` header's schema: "`ID` STRING KEY, `COUNT` BIGINT".
pub fn schema_columns(schema: &str) -> Vec<String> {
    let mut columns = vec![];
    let mut field = String::new();
    let (mut depth, mut quoted) = (0i32, false);
    let mut chars = schema.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                field.push('`');
                chars.next();
                continue;
            }
            '`' => quoted = !quoted,
            '<' | '(' if !quoted => depth += 1,
            '>' | ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                columns.push(column_name(&field));
                field.clear();
                continue;
            }
            _ => {}
        }
        field.push(c);
    }
    if !field.trim().is_empty() {
        columns.push(column_name(&field));
    }
    columns
}

fn column_name(field: &str) -> String {
    let field = field.trim();
    if let Some(rest) = field.strip_prefix('`') {
        // The name runs to the closing backtick; doubled backticks were already undone.
        if let Some(end) = rest.find("` ").or_else(|| rest.rfind('`')) {
            return rest[..end].to_string();
        }
    }
    field.split_whitespace().next().unwrap_or("").to_string()
}

/// A type as ksqlDB's REST API describes it (`{"type":"ARRAY","memberSchema":...}`), as SQL.
pub fn schema_type(schema: &Json) -> String {
    let base = schema["type"].as_str().unwrap_or("?");
    match base {
        "ARRAY" => format!("ARRAY<{}>", schema_type(&schema["memberSchema"])),
        "MAP" => format!("MAP<STRING, {}>", schema_type(&schema["memberSchema"])),
        "STRUCT" => {
            let fields: Vec<String> = schema["fields"]
                .as_array()
                .map(|fs| {
                    fs.iter().map(|f| format!("`{}` {}", str_of(&f["name"]), schema_type(&f["schema"]))).collect()
                })
                .unwrap_or_default();
            format!("STRUCT<{}>", fields.join(", "))
        }
        "DECIMAL" => match (schema["parameters"]["precision"].as_i64(), schema["parameters"]["scale"].as_i64()) {
            (Some(p), Some(s)) => format!("DECIMAL({p}, {s})"),
            _ => "DECIMAL".into(),
        },
        other => other.to_string(),
    }
}

fn str_of(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strs(items: &Json, fields: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|a| a.iter().map(|i| fields.iter().map(|f| str_of(&i[*f])).collect()).collect())
        .unwrap_or_default()
}

fn sources(e: &Json, field: &str, noun: &str) -> String {
    let name = format!("{noun} Name");
    listing(
        &[&name, "Kafka Topic", "Key Format", "Value Format", "Windowed"],
        &strs(&e[field], &["name", "topic", "keyFormat", "valueFormat", "isWindowed"]),
    )
}

fn query_status(q: &Json) -> String {
    match q["statusCount"].as_object() {
        Some(counts) if !counts.is_empty() => {
            counts.iter().map(|(k, v)| format!("{k}:{}", str_of(v))).collect::<Vec<_>>().join(",")
        }
        _ => str_of(&q["state"]),
    }
}

fn join(v: &Json) -> String {
    v.as_array().map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(",")).unwrap_or_else(|| str_of(v))
}

fn queries(items: &Json) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    vec![
                        str_of(&q["id"]),
                        str_of(&q["queryType"]),
                        query_status(q),
                        join(&q["sinks"]),
                        join(&q["sinkKafkaTopics"]),
                        str_of(&q["queryString"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

const QUERY_HEADERS: [&str; 6] = ["Query ID", "Query Type", "Status", "Sink Name", "Sink Kafka Topic", "Query String"];

fn field_type(f: &Json) -> String {
    let ty = schema_type(&f["schema"]);
    match f["type"].as_str() {
        Some("KEY") => format!("{ty} (key)"),
        Some("PRIMARY_KEY") => format!("{ty} (primary key)"),
        Some("HEADER") => match f["headerKey"].as_str() {
            Some(k) => format!("{ty} (header('{k}'))"),
            None => format!("{ty} (headers)"),
        },
        _ => ty,
    }
}

fn description(e: &Json) -> String {
    let d = &e["sourceDescription"];
    let mut out = String::new();
    let pair = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<21}: {v}\n"));
    pair(&mut out, "Name", str_of(&d["name"]));
    let extended = d["extended"].as_bool().unwrap_or(false);
    if extended {
        pair(&mut out, "Type", str_of(&d["type"]));
        if let Some(t) = d["timestamp"].as_str().filter(|t| !t.is_empty()) {
            pair(&mut out, "Timestamp field", t.to_string());
        }
        pair(&mut out, "Key format", str_of(&d["keyFormat"]));
        pair(&mut out, "Value format", str_of(&d["valueFormat"]));
        pair(&mut out, "Kafka topic", format!("{} (partitions: {})", str_of(&d["topic"]), str_of(&d["partitions"])));
        if let Some(w) = d["windowType"].as_str() {
            pair(&mut out, "Window type", w.to_string());
        }
        if let Some(s) = d["statement"].as_str().filter(|s| !s.is_empty()) {
            pair(&mut out, "Statement", s.to_string());
        }
    }
    let fields: Vec<Vec<String>> = d["fields"]
        .as_array()
        .map(|fs| fs.iter().map(|f| vec![str_of(&f["name"]), field_type(f)]).collect())
        .unwrap_or_default();
    out.push_str(&listing(&["Field", "Type"], &fields));
    if extended {
        for (title, field) in
            [("Queries that read from this", "readQueries"), ("Queries that write into this", "writeQueries")]
        {
            out.push('\n');
            out.push_str(&format!("{title} {}:\n", str_of(&d["type"])));
            out.push_str(&listing(&QUERY_HEADERS, &queries(&d[field])));
        }
    } else {
        out.push_str("For runtime statistics and query details run: DESCRIBE <Stream,Table> EXTENDED;\n");
    }
    out
}

/// `SHOW FUNCTIONS`: name, category and type.
fn function_names(e: &Json) -> String {
    listing(&["Function Name", "Category", "Type"], &strs(&e["functions"], &["name", "category", "type"]))
}

/// `DESCRIBE FUNCTION`: as ksqlDB's CLI prints it, a variation per signature.
fn describe_function(e: &Json) -> String {
    let mut out = String::new();
    let pair = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<12}: {v}\n"));
    pair(&mut out, "Name", str_of(&e["name"]));
    pair(&mut out, "Author", str_of(&e["author"]));
    pair(&mut out, "Version", str_of(&e["version"]));
    pair(&mut out, "Overview", str_of(&e["description"]));
    pair(&mut out, "Type", str_of(&e["type"]));
    pair(&mut out, "Jar", str_of(&e["path"]));
    pair(&mut out, "Variations", String::new());
    let name = str_of(&e["name"]);
    for f in e["functions"].as_array().into_iter().flatten() {
        let args: Vec<String> = f["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} {}", str_of(&a["name"]), str_of(&a["type"])))
            .collect();
        out.push('\n');
        out.push_str(&format!("\t{:<12}: {name}({})\n", "Variation", args.join(", ")));
        out.push_str(&format!("\t{:<12}: {}\n", "Returns", str_of(&f["returnType"])));
        if let Some(d) = f["description"].as_str().filter(|d| !d.is_empty()) {
            out.push_str(&format!("\t{:<12}: {d}\n", "Description"));
        }
    }
    out
}

/// `EXPLAIN`: the query, its schema, sources and sinks, plan and topology.
fn query_description(e: &Json) -> String {
    let d = &e["queryDescription"];
    let mut out = String::new();
    let pair = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<21}: {v}\n"));
    let id = str_of(&d["id"]);
    pair(&mut out, "ID", if id.is_empty() { "(not running)".into() } else { id });
    pair(&mut out, "Query Type", str_of(&d["queryType"]));
    if let Some(state) = d["state"].as_str() {
        pair(&mut out, "Status", state.to_string());
    }
    pair(&mut out, "SQL", str_of(&d["statementText"]));
    if let Some(w) = d["windowType"].as_str() {
        pair(&mut out, "Window type", w.to_string());
    }
    out.push('\n');
    let fields: Vec<Vec<String>> = d["fields"]
        .as_array()
        .map(|fs| fs.iter().map(|f| vec![str_of(&f["name"]), field_type(f)]).collect())
        .unwrap_or_default();
    out.push_str(&listing(&["Field", "Type"], &fields));
    out.push_str(&format!("\nSources that this query reads from: {}\n", join(&d["sources"]).replace(',', ", ")));
    let sinks = join(&d["sinks"]);
    if !sinks.is_empty() {
        out.push_str(&format!("Sinks that this query writes to: {}\n", sinks.replace(',', ", ")));
    }
    for err in d["queryErrors"].as_array().into_iter().flatten() {
        out.push_str(&format!("Error: {}\n", str_of(&err["errorMessage"])));
    }
    out.push_str("\nExecution plan\n--------------\n");
    out.push_str(&str_of(&d["executionPlan"]));
    out.push_str("\nProcessing topology\n-------------------\n");
    out.push_str(&str_of(&d["topology"]));
    out
}

/// One `/ksql` entity as text for standard output.
pub fn entity(e: &Json) -> String {
    match e["@type"].as_str().unwrap_or("") {
        "currentStatus" => {
            let status = &e["commandStatus"];
            let message = status["message"].as_str().filter(|m| !m.is_empty()).map(str::to_string);
            let message = message.unwrap_or_else(|| str_of(&status["status"]));
            listing(&["Message"], &[vec![message]])
        }
        "streams" => sources(e, "streams", "Stream"),
        "tables" => sources(e, "tables", "Table"),
        "queries" => listing(&QUERY_HEADERS, &queries(&e["queries"])),
        "kafka_topics" => {
            let rows: Vec<Vec<String>> = e["topics"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| {
                            let replicas: Vec<String> =
                                t["replicaInfo"].as_array().map(|r| r.iter().map(str_of).collect()).unwrap_or_default();
                            vec![str_of(&t["name"]), replicas.len().to_string(), replicas.join(" ")]
                        })
                        .collect()
                })
                .unwrap_or_default();
            listing(&["Kafka Topic", "Partitions", "Partition Replicas"], &rows)
        }
        "sourceDescription" => description(e),
        "function_names" => function_names(e),
        "describe_function" => describe_function(e),
        "queryDescription" => query_description(e),
        "properties" => listing(&["Property", "Scope", "Value"], &strs(&e["properties"], &["name", "scope", "value"])),
        "variables" => listing(&["Variable Name", "Value"], &strs(&e["variables"], &["name", "value"])),
        "type_list" => {
            let rows: Vec<Vec<String>> = e["types"]
                .as_object()
                .map(|ts| ts.iter().map(|(name, t)| vec![name.clone(), schema_type(t)]).collect())
                .unwrap_or_default();
            listing(&["Type Name", "Schema"], &rows)
        }
        _ => serde_json::to_string_pretty(e).unwrap_or_default() + "\n",
    }
}

/// The warnings an entity carries.
pub fn warnings(e: &Json) -> Vec<String> {
    e["warnings"].as_array().map(|ws| ws.iter().map(|w| str_of(&w["message"])).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn listings_align_columns_between_rules() {
        let out = entity(&json!({
            "@type": "streams",
            "streams": [
                { "name": "ORDERS", "topic": "orders", "keyFormat": "KAFKA", "valueFormat": "JSON", "isWindowed": false },
                { "name": "B", "topic": "a_long_topic_name", "keyFormat": "KAFKA", "valueFormat": "AVRO", "isWindowed": true },
            ],
        }));
        let rule = "-".repeat(72);
        let expected = [
            " Stream Name | Kafka Topic       | Key Format | Value Format | Windowed",
            &rule,
            " ORDERS      | orders            | KAFKA      | JSON         | false",
            " B           | a_long_topic_name | KAFKA      | AVRO         | true",
            &rule,
            "",
        ]
        .join("\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn status_descriptions_and_unknown_entities() {
        let out = entity(
            &json!({ "@type": "currentStatus", "commandStatus": { "status": "SUCCESS", "message": "Stream created" } }),
        );
        assert_eq!(out, " Message\n----------------\n Stream created\n----------------\n");
        let out = entity(&json!({
            "@type": "sourceDescription",
            "sourceDescription": {
                "name": "S", "extended": false,
                "fields": [
                    { "name": "ID", "schema": { "type": "STRING" }, "type": "KEY" },
                    { "name": "TAGS", "schema": { "type": "ARRAY", "memberSchema": { "type": "STRING" } } },
                    { "name": "P", "schema": { "type": "DECIMAL", "parameters": { "precision": 4, "scale": 2 } } },
                    { "name": "S", "schema": { "type": "STRUCT", "fields": [{ "name": "A", "schema": { "type": "INTEGER" } }] } },
                ],
            },
        }));
        assert!(out.starts_with("Name                 : S\n Field | Type\n"), "{out}");
        assert!(out.contains(" ID    | STRING (key)\n"), "{out}");
        assert!(out.contains(" TAGS  | ARRAY<STRING>\n"), "{out}");
        assert!(out.contains(" P     | DECIMAL(4, 2)\n"), "{out}");
        assert!(out.contains(" S     | STRUCT<`A` INTEGER>\n"), "{out}");
        assert!(entity(&json!({ "@type": "whatever", "x": 1 })).contains("\"x\": 1"));
    }

    #[test]
    fn functions_and_explain() {
        let names = entity(&json!({
            "@type": "function_names",
            "functions": [{ "name": "ABS", "category": "MATHEMATICAL", "type": "SCALAR" }],
        }));
        assert!(names.contains("Function Name") && names.contains("ABS") && names.contains("MATHEMATICAL"), "{names}");
        let f = entity(&json!({
            "@type": "describe_function", "name": "ABS", "author": "Freshet", "version": "0.1.0",
            "description": "A built-in mathematical function.", "type": "SCALAR", "path": "internal",
            "functions": [{ "arguments": [{ "name": "arg1", "type": "INTEGER" }], "returnType": "INTEGER", "description": "" }],
        }));
        assert!(f.contains("Variation   : ABS(arg1 INTEGER)") && f.contains("Returns     : INTEGER"), "{f}");
        let x = entity(&json!({
            "@type": "queryDescription",
            "queryDescription": {
                "id": "CSAS_OUT_0", "queryType": "PERSISTENT", "state": "RUNNING", "statementText": "CREATE STREAM OUT AS SELECT * FROM S;",
                "fields": [{ "name": "K", "schema": { "type": "STRING" }, "type": "KEY" }],
                "sources": ["S"], "sinks": ["OUT"], "executionPlan": " > [ SINK ] | x\n", "topology": "ops\n", "queryErrors": [],
            },
        }));
        for part in [
            "CSAS_OUT_0",
            "RUNNING",
            "STRING (key)",
            "reads from: S",
            "writes to: OUT",
            "[ SINK ]",
            "Processing topology",
        ] {
            assert!(x.contains(part), "{part} in {x}");
        }
    }

    #[test]
    fn query_schemas_and_boxes() {
        assert_eq!(schema_columns("`ID` STRING KEY, `COUNT` BIGINT"), ["ID", "COUNT"]);
        assert_eq!(
            schema_columns(
                "`S` STRUCT<`A` INTEGER, `B` MAP<STRING, INTEGER>>, `D` DECIMAL(4, 2), `we``ird, name` STRING"
            ),
            ["S", "D", "we`ird, name"]
        );
        let widths = fitted_widths(&["ID".into(), "COUNT".into()], &[vec!["abc".into(), "1".into()]]);
        assert_eq!(
            box_header(&widths, &["ID".into(), "COUNT".into()]),
            "+-----+-------+\n| ID  | COUNT |\n+-----+-------+"
        );
        assert_eq!(box_row(&widths, &[cell(&json!("abc")), cell(&json!(1))]), "| abc | 1     |");
        assert_eq!(cell(&json!({ "A": [1, null] })), "{\"A\":[1,null]}");
    }
}
