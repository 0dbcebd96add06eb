//! Runs test cases in ksqlDB's query-validation-test JSON format (statements, input records,
//! expected output records or an expected error) against an engine over in-memory topics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::catalog::SourceDef;
use crate::engine::Engine;
use crate::format::{from_json, kafka_decode, kafka_encode, to_json, Format};
use crate::functions::base64_decode;
use crate::query::split_windowed_key;
use crate::topics::{MemTopics, Record, Topics};
use crate::types::SqlType;

/// The result of one case (one format/config variant of a test).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub verdict: Verdict,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Removes `//` and `/* */` comments outside strings (the case files carry them).
pub fn strip_json_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == '\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push(c);
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The JSON files under the given paths, sorted.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    out.extend(collect_files(&[e])?);
                } else if e.extension().is_some_and(|x| x == "json") {
                    out.push(e);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs a REST-format case: the case, the `{FORMAT}` and `{CONFIG}` values of this run.
pub type RestRunner<'a> = &'a mut dyn FnMut(&Json, Option<&str>, Option<&Json>) -> Verdict;

/// Whether a case is in the REST format (responses to statements, or an expected HTTP error).
pub fn is_rest_case(case: &Json) -> bool {
    case.get("responses").is_some() || case.get("expectedError").is_some()
}

/// The statements of a case with `{FORMAT}` replaced.
pub fn case_statements(case: &Json, format: Option<&str>) -> Vec<String> {
    let subst = |s: &str| match format {
        Some(f) => s.replace("{FORMAT}", f),
        None => s.to_string(),
    };
    case["statements"].as_array().map(|a| a.iter().filter_map(|s| s.as_str()).map(subst).collect()).unwrap_or_default()
}

/// Why a case is not run, if it is not.
fn skip_reason(case: &Json, format: Option<&str>) -> Option<Verdict> {
    if case["enabled"] == Json::Bool(false) {
        return Some(Verdict::Skip("disabled".into()));
    }
    if needs_schema_registry(&case_statements(case, format), case) {
        return Some(Verdict::Skip("needs a schema registry (AVRO/PROTOBUF/JSON_SR)".into()));
    }
    None
}

/// Runs every case of one file (REST-format cases are skipped).
pub fn run_file(path: &Path, filter: Option<&str>) -> Vec<CaseResult> {
    run_file_with(path, filter, None)
}

/// Runs every case of one file; REST-format cases go to `rest`.
pub fn run_file_with(path: &Path, filter: Option<&str>, mut rest: Option<RestRunner>) -> Vec<CaseResult> {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![CaseResult { file, name: String::new(), verdict: Verdict::Fail(format!("cannot read: {e}")) }]
        }
    };
    let doc: Json = match serde_json::from_str(&strip_json_comments(&text)) {
        Ok(d) => d,
        Err(e) => {
            return vec![CaseResult {
                file,
                name: String::new(),
                verdict: Verdict::Fail(format!("not valid JSON: {e}")),
            }]
        }
    };
    let mut results = vec![];
    for case in doc["tests"].as_array().cloned().unwrap_or_default() {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let formats: Vec<Option<String>> = match case["format"].as_array() {
            Some(f) if !f.is_empty() => f.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            _ => vec![None],
        };
        let configs: Vec<Option<Json>> = match case["config"].as_array() {
            Some(c) if !c.is_empty() => c.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for fmt in &formats {
            for cfg in &configs {
                let mut full = name.clone();
                if let Some(f) = fmt {
                    full.push_str(&format!(" - {f}"));
                }
                if let Some(c) = cfg {
                    full.push_str(&format!(" - {c}"));
                }
                if let Some(f) = filter {
                    if !full.contains(f) && !file.contains(f) {
                        continue;
                    }
                }
                let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Some(skip) = skip_reason(&case, fmt.as_deref()) {
                        return skip;
                    }
                    if is_rest_case(&case) {
                        return match rest.as_mut() {
                            Some(run) => run(&case, fmt.as_deref(), cfg.as_ref()),
                            None => Verdict::Skip("REST-format case (needs the REST runner)".into()),
                        };
                    }
                    run_case(&case, fmt.as_deref(), cfg.as_ref())
                }))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Verdict::Fail(format!("panicked: {msg}"))
                });
                results.push(CaseResult { file: file.clone(), name: full, verdict });
            }
        }
    }
    results
}

fn needs_schema_registry(statements: &[String], case: &Json) -> bool {
    let upper: String = statements.join(" ").to_ascii_uppercase();
    let uses = |f: &str| {
        upper.contains(&format!("'{f}'"))
            || upper.contains(&format!("FORMAT={f}"))
            || upper.contains(&format!("FORMAT = {f}"))
    };
    if ["AVRO", "PROTOBUF", "PROTOBUF_NOSR", "JSON_SR"].iter().any(|f| uses(f)) {
        return true;
    }
    case["topics"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t.get("valueSchema").is_some()
                || t.get("keySchema").is_some()
                || ["valueFormat", "keyFormat", "format"].iter().any(|k| {
                    t[*k].as_str().is_some_and(|f| {
                        !matches!(f.to_ascii_uppercase().as_str(), "JSON" | "KAFKA" | "DELIMITED" | "NONE")
                    })
                })
        })
    })
}

/// Whether cases run with [`Engine::restore_every_step`] (`freshet sql-test
/// --restore-every-step`): each query's state goes through its store file and changelog and is
/// restored after every input record, as if the server restarted there.
static RESTORE_EVERY_STEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_restore_every_step(on: bool) {
    RESTORE_EVERY_STEP.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A directory removed when dropped (the state files of one case).
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ScratchDir(std::env::temp_dir().join(format!("freshet-sql-test-{}-{n}", std::process::id())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one case with `{FORMAT}` replaced by `format`.
pub fn run_case(case: &Json, format: Option<&str>, config: Option<&Json>) -> Verdict {
    if let Some(skip) = skip_reason(case, format) {
        return skip;
    }
    let statements = case_statements(case, format);
    let topics = Arc::new(MemTopics::new());
    let mut engine = Engine::new(topics.clone());
    engine.auto_create_topics = true;
    let scratch = RESTORE_EVERY_STEP.load(std::sync::atomic::Ordering::Relaxed).then(ScratchDir::new);
    engine.restore_every_step = scratch.as_ref().map(|d| d.0.clone());
    if let Some(ts) = case["topics"].as_array() {
        for t in ts {
            if let Some(name) = t["name"].as_str() {
                let parts = t["partitions"].as_i64().unwrap_or(1) as i32;
                let _ = topics.create_topic(name, parts);
            }
        }
    }
    // Engine properties; a value "{CONFIG}" takes this variant's config value.
    if let Some(props) = case["properties"].as_object() {
        for (k, v) in props {
            let v = match v {
                Json::String(t) if t == "{CONFIG}" => match config {
                    Some(Json::String(c)) => c.clone(),
                    Some(other) => other.to_string(),
                    None => continue,
                },
                Json::String(t) => t.clone(),
                other => other.to_string(),
            };
            engine.properties.insert(k.clone(), v);
        }
    }
    let expected_error = case.get("expectedException");
    // Positions in errors count lines over the whole script, the statements joined by newlines.
    let mut line_offset = 0;
    for stmt in &statements {
        if let Err(mut e) = engine.execute(stmt) {
            if let Some(p) = e.pos.as_mut() {
                p.line += line_offset;
            }
            return match expected_error {
                Some(exp) => {
                    let want = exp["message"].as_str().unwrap_or("");
                    let got = e.to_string();
                    if got.contains(want) || e.message.contains(want) {
                        Verdict::Pass
                    } else {
                        Verdict::Fail(format!("expected error containing: {want}\n       got error: {got}"))
                    }
                }
                None => Verdict::Fail(format!("statement failed: {stmt}\n  error: {e}")),
            };
        }
        line_offset += stmt.lines().count().max(1) as u64;
    }
    // Inputs, one at a time, each processed to completion.
    for input in case["inputs"].as_array().cloned().unwrap_or_default() {
        let topic = input["topic"].as_str().unwrap_or_default().to_string();
        let sources = engine.catalog.by_topic(&topic);
        let source = sources.iter().find(|s| s.writer.is_none()).or_else(|| sources.first()).map(|s| (*s).clone());
        let record = match encode_input(&input, source.as_ref()) {
            Ok(r) => r,
            Err(e) => return Verdict::Fail(format!("cannot encode input {input}: {e}")),
        };
        if topics.partitions(&topic).is_none() {
            let _ = topics.create_topic(&topic, 1);
        }
        if let Err(e) = topics.append(&topic, 0, vec![record]) {
            return Verdict::Fail(format!("cannot write input: {e}"));
        }
        if let Err(e) = engine.run_until_idle() {
            return Verdict::Fail(format!("processing failed: {e}"));
        }
    }
    if let Some(exp) = expected_error {
        let want = exp["message"].as_str().unwrap_or("");
        // Some expected errors happen while processing; they land in the processing log.
        if engine.processing_log.iter().any(|p| p.message.contains(want)) {
            return Verdict::Pass;
        }
        return Verdict::Fail(format!("expected an error containing: {want}\n  but every statement succeeded"));
    }
    compare_outputs(case, &engine, topics.as_ref())
}

pub fn encode_input(input: &Json, source: Option<&SourceDef>) -> Result<Record, String> {
    let timestamp = input["timestamp"].as_i64().unwrap_or(0);
    let key_json = input.get("key").cloned().unwrap_or(Json::Null);
    let value_json = input.get("value").cloned().unwrap_or(Json::Null);
    let mut key = match source {
        None => json_bytes(&key_json),
        Some(src) => encode_side(&key_json, &src.keys, src.key_serde.format)?,
    };
    if let Some(w) = input.get("window") {
        let start = w["start"].as_i64().unwrap_or(0);
        let end = w["end"].as_i64().unwrap_or(0);
        let mut k = key.unwrap_or_default();
        if w["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("session")) {
            k.extend_from_slice(&end.to_be_bytes());
        }
        k.extend_from_slice(&start.to_be_bytes());
        key = Some(k);
    }
    let value = match source {
        None => json_bytes(&value_json),
        Some(src) => encode_side(&value_json, &src.values, src.value_serde.format)?,
    };
    let headers = input["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (h["KEY"].as_str().unwrap_or_default().to_string(), h["VALUE"].as_str().and_then(base64_decode))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Record { key: key.map(Into::into), value: value.map(Into::into), timestamp, headers })
}

fn json_bytes(j: &Json) -> Option<Vec<u8>> {
    match j {
        Json::Null => None,
        Json::String(s) => Some(s.as_bytes().to_vec()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn encode_side(j: &Json, columns: &[crate::types::Field], format: Format) -> Result<Option<Vec<u8>>, String> {
    if j.is_null() {
        return Ok(None);
    }
    match format {
        Format::None => Ok(None),
        Format::Json => Ok(Some(j.to_string().into_bytes())),
        Format::Delimited => Ok(json_bytes(j)),
        Format::Kafka => match columns.first() {
            None => Ok(None),
            Some(c) => {
                let v = from_json(&c.ty, j)?;
                if v.is_null() {
                    return Ok(None);
                }
                Ok(Some(kafka_encode(&v)?))
            }
        },
    }
}

fn decode_side(bytes: Option<&[u8]>, columns: &[crate::types::Field], format: Format) -> Json {
    let Some(b) = bytes else {
        return Json::Null;
    };
    match format {
        Format::None => Json::Null,
        Format::Json => {
            serde_json::from_slice(b).unwrap_or_else(|_| Json::String(String::from_utf8_lossy(b).into_owned()))
        }
        Format::Delimited => Json::String(String::from_utf8_lossy(b).into_owned()),
        Format::Kafka => match columns.first() {
            None => Json::Null,
            Some(c) => kafka_decode(&c.ty, b)
                .map(|v| to_json(&v))
                .unwrap_or_else(|e| Json::String(format!("<undecodable: {e}>"))),
        },
    }
}

/// An expected record is read with the sink's schema, as ksqlDB's harness reads it: a DECIMAL
/// column given as a JSON string ("3.40") is the number it spells.
fn read_decimals(fields: &mut serde_json::Map<String, Json>, columns: &[crate::types::Field]) {
    for (name, v) in fields.iter_mut() {
        let Some(c) = columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)) else { continue };
        if let (SqlType::Decimal { .. }, Json::String(text)) = (&c.ty, &*v) {
            if let Ok(n) = text.trim().parse::<serde_json::Number>() {
                *v = Json::Number(n);
            }
        }
    }
}

/// Decoded output record: key, value, timestamp, window.
struct Actual {
    key: Json,
    value: Json,
    timestamp: i64,
    window: Option<(i64, i64)>,
}

pub fn compare_outputs(case: &Json, engine: &Engine, topics: &dyn Topics) -> Verdict {
    let expected = case["outputs"].as_array().cloned().unwrap_or_default();
    let mut topic_order: Vec<String> = vec![];
    for e in &expected {
        let t = e["topic"].as_str().unwrap_or_default().to_string();
        if !topic_order.contains(&t) {
            topic_order.push(t);
        }
    }
    for topic in topic_order {
        let want: Vec<&Json> = expected.iter().filter(|e| e["topic"].as_str() == Some(topic.as_str())).collect();
        let sources = engine.catalog.by_topic(&topic);
        let sink = sources.iter().find(|s| s.writer.is_some()).or_else(|| sources.first()).map(|s| (*s).clone());
        let mut actual = vec![];
        let parts = topics.partitions(&topic).unwrap_or(0);
        for p in 0..parts {
            for c in topics.read(&topic, p, 0, usize::MAX).unwrap_or_default() {
                let rec = c.record;
                let (key, window) = match &sink {
                    Some(s) => {
                        let mut kb = rec.key.as_deref();
                        let mut window = None;
                        if let (Some(w), Some(k)) = (s.window, kb) {
                            if let Ok((core, win)) = split_windowed_key(w, k) {
                                kb = Some(core);
                                window = Some(win);
                            }
                        }
                        let key =
                            if s.keys.is_empty() { Json::Null } else { decode_side(kb, &s.keys, s.key_serde.format) };
                        (key, window)
                    }
                    None => (
                        rec.key
                            .as_deref()
                            .map(|b| Json::String(String::from_utf8_lossy(b).into_owned()))
                            .unwrap_or(Json::Null),
                        None,
                    ),
                };
                let value = match &sink {
                    Some(s) => decode_side(rec.value.as_deref(), &s.values, s.value_serde.format),
                    None => rec
                        .value
                        .as_deref()
                        .map(|b| serde_json::from_slice(b).unwrap_or(Json::Null))
                        .unwrap_or(Json::Null),
                };
                actual.push(Actual { key, value, timestamp: rec.timestamp, window });
            }
        }
        let show = |a: &[Actual]| -> String {
            a.iter()
                .map(|r| {
                    let mut s = format!("key={} value={} ts={}", r.key, r.value, r.timestamp);
                    if let Some((ws, we)) = r.window {
                        s.push_str(&format!(" window=[{ws},{we})"));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("\n      ")
        };
        let show_expected = |w: &[&Json]| -> String {
            w.iter()
                .map(|e| {
                    let mut s = format!(
                        "key={} value={}",
                        e.get("key").cloned().unwrap_or(Json::Null),
                        e.get("value").cloned().unwrap_or(Json::Null)
                    );
                    if let Some(ts) = e.get("timestamp") {
                        s.push_str(&format!(" ts={ts}"));
                    }
                    if let Some(w) = e.get("window") {
                        s.push_str(&format!(" window=[{},{})", w["start"], w["end"]));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("\n      ")
        };
        if actual.len() != want.len() {
            return Verdict::Fail(format!(
                "topic {topic}: expected {} records, got {}\n  expected:\n      {}\n  actual:\n      {}",
                want.len(),
                actual.len(),
                show_expected(&want),
                show(&actual)
            ));
        }
        for (i, (w, a)) in want.iter().zip(&actual).enumerate() {
            let wk = w.get("key").cloned().unwrap_or(Json::Null);
            let mut wv = w.get("value").cloned().unwrap_or(Json::Null);
            if let (Some(s), Json::Object(fields)) = (&sink, &mut wv) {
                if s.value_serde.format == Format::Json {
                    read_decimals(fields, &s.values);
                }
            }
            let mut ok = record_eq(&wk, &a.key) && record_eq(&wv, &a.value);
            if let Some(ts) = w.get("timestamp").and_then(Json::as_i64) {
                ok &= ts == a.timestamp;
            }
            if let Some(win) = w.get("window") {
                ok &= a.window == Some((win["start"].as_i64().unwrap_or(-1), win["end"].as_i64().unwrap_or(-1)));
            }
            if !ok {
                return Verdict::Fail(format!(
                    "topic {topic}: record {i} differs\n  expected:\n      {}\n  actual:\n      {}",
                    show_expected(&want),
                    show(&actual)
                ));
            }
        }
    }
    Verdict::Pass
}

/// A record's key or value: its column names (the top-level fields) match case-insensitively,
/// as ksqlDB's JSON deserializer matches them, and a null field equals a missing one (ksqlDB
/// reads the expected record with the sink's schema); everything below compares with
/// [`json_eq`].
pub fn record_eq(expected: &Json, actual: &Json) -> bool {
    fn field<'a>(m: &'a serde_json::Map<String, Json>, k: &str) -> &'a Json {
        m.get(k).or_else(|| m.iter().find(|(k2, _)| k2.eq_ignore_ascii_case(k)).map(|(_, v)| v)).unwrap_or(&Json::Null)
    }
    match (expected, actual) {
        (Json::Object(x), Json::Object(y)) => {
            x.iter().all(|(k, v)| json_eq(v, field(y, k))) && y.iter().all(|(k, w)| json_eq(field(x, k), w))
        }
        _ => json_eq(expected, actual),
    }
}

/// JSON equality with numeric tolerance (doubles within 1e-6) and numbers equal across
/// integer/float spellings. Integers beyond 2^53 compare as doubles too: numbers in the case
/// files have been through doubles (an input written `1.2345678987654322e+16` expects
/// `12345678987654321`), so digits past a double's precision carry no meaning there.
pub fn json_eq(a: &Json, b: &Json) -> bool {
    const EXACT: u64 = 1 << 53;
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                if i.unsigned_abs() <= EXACT && j.unsigned_abs() <= EXACT {
                    return i == j;
                }
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p == q || (p - q).abs() <= 1e-6 * p.abs().max(q.abs()).max(1.0),
                _ => false,
            }
        }
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
